"""The losses used as a library in one's own loop (docs/library.md): keyword-only sizes, clear
input errors, parameters as attributes, a state of another loss refused, and a search's result
loaded with its per-epoch schedule — the README's example run as written."""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path

import pytest
import torch

from lfsearch import losses

REPO = Path(__file__).resolve().parents[1]
D, C = 8, 5


def _data(seed=0, n=12, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g, dtype=dtype), torch.randint(0, C, (n,), generator=g)


def test_build_refuses_positional_sizes_at_once_and_shows_the_keywords():
    with pytest.raises(TypeError, match=r"keyword-only; write build\('arcface', "
                                        r"num_classes=C, embedding_size=D\)"):
        losses.build("arcface", C, D)  # PML's order, refused before any forward
    loss = losses.build("arcface", num_classes=C, embedding_size=D)
    assert loss.weight.shape == (C, D)


@pytest.mark.parametrize("x, words", [
    (torch.randn(12, D, dtype=torch.float64), "embeddings are float64 but the loss's weight is "
                                              "float32"),
    (torch.randn(D, 12), r"shape \(N, 8\).*got \(8, 12\) \(transposed\? pass x.T\)"),
    (torch.randn(D), r"one embedding\? pass x.unsqueeze\(0\)"),
    (torch.randn(12, 3, 4, 4), "images\\? pass the backbone's embeddings"),
])
def test_wrong_dtype_or_shape_embeddings_get_one_clear_line(x, words):
    loss = losses.build("cosface", num_classes=C, embedding_size=D)
    _, y = _data()
    with pytest.raises(ValueError, match=words) as err:
        loss(x, y[: x.shape[0]] if x.dim() == 2 else y)
    assert "\n" not in str(err.value)
    # float64 works once the loss is float64, and equals the float32 loss
    if x.dtype == torch.float64:
        x32, y = _data()
        double = losses.build("cosface", num_classes=C, embedding_size=D).double()
        double.load_state_dict(loss.state_dict())
        assert double(x32.double(), y).item() == pytest.approx(loss(x32, y).item(), rel=1e-5)


def test_setting_a_parameter_as_an_attribute_is_set_params():
    x, y = _data()
    g = torch.Generator().manual_seed(3)
    loss = losses.build("arcface", num_classes=C, embedding_size=D, generator=g)
    loss.s = 32
    loss.m = 0.2
    assert loss.get_params() == {"s": 32.0, "m": 0.2} and (loss.s, loss.m) == (32.0, 0.2)
    fresh = losses.build("arcface", num_classes=C, embedding_size=D, s=32.0, m=0.2,
                         generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss(x, y), fresh(x, y))  # the forward uses the new values
    with pytest.raises(ValueError, match=r"s must be > 0"):
        loss.s = -1
    assert loss.s == 32.0
    with pytest.raises(AttributeError, match=r"'s' of loss 'adacos' is read-only"):
        losses.build("adacos", num_classes=C, embedding_size=D).s = 10
    with pytest.raises(AttributeError, match=r"no 'margin' .*m, in radians .*degrees"):
        loss.margin = 28.6  # PML's name and unit
    joint = losses.build("cosface", num_classes=C, embedding_size=D, aux="center")
    joint.s = 16
    joint.aux_weight = 0.5
    assert joint.get_params()["s"] == 16.0 and joint.main.s == 16.0
    assert joint.get_params()["aux_weight"] == 0.5


def test_load_state_dict_refuses_another_loss_before_copying_anything():
    arc = losses.build("arcface", num_classes=C, embedding_size=D, m=0.3,
                       generator=torch.Generator().manual_seed(1))
    cos = losses.build("cosface", num_classes=C, embedding_size=D,
                       generator=torch.Generator().manual_seed(2))
    before = cos.weight.detach().clone()
    with pytest.raises(ValueError, match=r"the state is of loss 'arcface', this loss is "
                                         r"'cosface'") as err:
        cos.load_state_dict(arc.state_dict())
    assert "\n" not in str(err.value)
    assert torch.equal(cos.weight, before) and cos.get_params() == {"s": 64.0, "m": 0.35}
    # the same class loads; a state saved without the tag (older checkpoints) still loads
    other = losses.build("arcface", num_classes=C, embedding_size=D)
    other.load_state_dict(arc.state_dict())
    assert other.m == 0.3 and torch.equal(other.weight, arc.weight)
    old = arc.state_dict()
    old["_extra_state"] = {"values": {"s": 64.0, "m": 0.25}}
    other.load_state_dict(old)
    assert other.m == 0.25
    # inside a joint loss too
    joint = losses.build("cosface", num_classes=C, embedding_size=D, aux="center")
    with pytest.raises(ValueError, match="'arcface\\+center', this loss is 'cosface\\+center'"):
        joint.load_state_dict(losses.build("arcface", num_classes=C, embedding_size=D,
                                           aux="center").state_dict())


def test_from_discovered_applies_each_epochs_parameters(tmp_path):
    path = tmp_path / "discovered.toml"
    path.write_text('[loss]\nname = "cosface"\n[loss.params.m]\ninit = 0.3\nlow = 0.0\n'
                    'high = 0.6\n[controller]\nkind = "fixed"\nschedule = [{ m = 0.1 }, '
                    '{ m = 0.2 }]\n')
    loss = losses.from_discovered(path, num_classes=C, embedding_size=D)
    assert isinstance(loss, losses.CosFace) and loss.weight.shape == (C, D)
    assert loss.m == 0.1  # epoch 0's value from the start
    assert loss.set_epoch(1) == {"m": 0.2} and loss.m == 0.2
    assert loss.set_epoch(7) == {"m": 0.2}  # past the end: the last entry
    assert loss.schedule == [{"m": 0.1}, {"m": 0.2}]
    path.write_text('[loss]\nname = "cosface"\n[controller]\nschedule = [{ m = 5.0 }]\n')
    with pytest.raises(ValueError, match=r"m must lie in \[0, 2\]; got 5"):
        losses.from_discovered(path, num_classes=C, embedding_size=D)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        losses.from_discovered(tmp_path / "none.toml", num_classes=C, embedding_size=D)


def _readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_runs_on_a_real_discovered_schedule(tmp_path, monkeypatch,
                                                                   capsys):
    from lfsearch.search import search

    monkeypatch.chdir(tmp_path)
    search("search_softmax", epochs=2, candidates=2, threads=1, runs_dir="runs",
           tensorboard=False)
    run = tmp_path / "runs" / "search_softmax-digits-seed0"
    chosen = [r for r in csv.DictReader((run / "epochs.csv").open()) if r["chosen"] == "True"]
    schedule = tomllib.loads((run / "discovered.toml").read_text())["controller"]["schedule"]
    assert [float(r["s"]) for r in chosen] == [e["s"] for e in schedule]
    code = _readme_block("The losses in your own training loop")
    assert "from_discovered(\"runs/search_softmax-digits-seed0/discovered.toml\"" in code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    loss_fn = namespace["loss_fn"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for epoch, line in enumerate(lines):  # each epoch trained with the search's choice
        want = schedule[min(epoch, len(schedule) - 1)]
        assert line.startswith(f"{epoch} {want}"), (line, want)
    assert loss_fn.get_params()["s"] == schedule[-1]["s"]
    assert namespace["arcface"].m == 0.5
