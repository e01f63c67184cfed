"""5-point face alignment: the similarity transform that maps a face's 5 landmarks (eyes, nose
tip, mouth corners) onto the ArcFace 112x112 template, and the Pillow warp that applies it
(used by `ijb:DIR?align=yes` on insightface's loose crops; docs/face_recognition.md).

The transform is a similarity p -> c·R·p + t (rotation R, uniform scale c, translation t)
fitted by least squares, Umeyama's closed form (IEEE TPAMI 13(4), 1991). With source points
x_i and destination points y_i (i = 1..n):

    μ_x = (1/n) Σ x_i,   μ_y = (1/n) Σ y_i,   σ_x² = (1/n) Σ ‖x_i − μ_x‖²
    Σ_xy = (1/n) Σ (y_i − μ_y)(x_i − μ_x)ᵀ = U D Vᵀ          (SVD)
    S = diag(1, det(U)·det(V))                               (no reflection)
    R = U S Vᵀ,   c = tr(D S) / σ_x²,   t = μ_y − c R μ_x

which minimises Σ ‖y_i − (c R x_i + t)‖². Coordinates are pixel indices (pixel (0, 0)'s
centre at (0, 0)), the convention of the landmark files and of OpenCV's warpAffine that
insightface aligns with; Pillow samples at pixel centres (x + 0.5), so `warp` shifts by half
a pixel on both sides.
"""

from __future__ import annotations

import numpy as np

ALIGNED_SIZE = 112
# ArcFace's reference points in a 112x112 crop: left eye, right eye, nose tip, left and right
# mouth corners (x, y)
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def similarity_transform(src, dst) -> np.ndarray:
    """The 2x3 matrix [c·R | t] of the least-squares similarity from points `src` (n, 2) to
    `dst` (n, 2) (module docstring). ValueError when `src` is degenerate (all points equal)."""
    x = np.asarray(src, np.float64).reshape(-1, 2)
    y = np.asarray(dst, np.float64).reshape(-1, 2)
    if x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"similarity_transform needs two or more matching points; got "
                         f"{x.shape[0]} and {y.shape[0]}")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    var_x = (xc ** 2).sum() / len(x)
    if not np.isfinite(var_x) or var_x <= 1e-12:
        raise ValueError("similarity_transform: the source points coincide (no scale or "
                         "rotation to fit)")
    cov = yc.T @ xc / len(x)
    u, d, vt = np.linalg.svd(cov)
    s = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    r = u @ np.diag(s) @ vt
    c = float((d * s).sum() / var_x)
    t = my - c * r @ mx
    return np.concatenate([c * r, t[:, None]], 1)


def warp(img, matrix: np.ndarray, size: int = ALIGNED_SIZE):
    """Pillow image `img` warped by the 2x3 matrix (pixel-index coordinates, source ->
    output) onto a size x size image, bilinear; outside the source is black."""
    from PIL import Image

    m = np.asarray(matrix, np.float64)
    a_inv = np.linalg.inv(m[:, :2])
    b_inv = -a_inv @ m[:, 2]
    # Pillow maps output (X, Y) = index + 0.5 to input A·(X, Y) + c and samples index c - 0.5:
    # c = b_inv + 0.5 - A·(0.5, 0.5) keeps the index-coordinate map output -> input exact.
    c = b_inv + 0.5 - a_inv @ np.array([0.5, 0.5])
    data = (a_inv[0, 0], a_inv[0, 1], c[0], a_inv[1, 0], a_inv[1, 1], c[1])
    return img.transform((size, size), Image.AFFINE, data, resample=Image.BILINEAR)


def align(img, landmarks, size: int = ALIGNED_SIZE):
    """`img` aligned by its 5 landmarks (x1 y1 ... x5 y5, pixel indices) onto ArcFace's
    112x112 template (scaled by size / 112)."""
    dst = ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)
    return warp(img, similarity_transform(np.asarray(landmarks, np.float64).reshape(5, 2), dst),
                size)
