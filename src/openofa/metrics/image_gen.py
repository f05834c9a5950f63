"""Image-generation metrics of the original's text-to-image evaluation: FID of the top-1 images
against reference statistics (``gt_stat.npz``: ``mu``, ``sigma`` of Inception pool features), and
the Inception Score.

The arithmetic is the standard one (the Fréchet distance of two Gaussians; IS = exp of the mean
KL divergence between p(y|x) and p(y), averaged over splits). The Inception network is not
reimplemented: features come from ``pytorch-fid``'s InceptionV3 (the network FID is defined
with) when that package, its torchvision and its weights are available; otherwise
:func:`inception_outputs` raises one clear error. See ``docs/imagine.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from openofa.errors import OFAError


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. The trace of the square root is the
    sum of the square roots of the eigenvalues of ``S1 S2`` (real and non-negative for two
    covariance matrices, up to rounding, which is clipped)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise OFAError(f"FID: statistics of different shapes ({mu1.shape}, {s1.shape}) and ({mu2.shape}, {s2.shape})")
    eig = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation over ``splits`` of ``exp(E_x KL(p(y|x) || p(y)))``."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise OFAError("inception score: needs class probabilities of at least one image")
    splits = max(1, min(splits, len(p)))
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(py, 1e-12, None)))).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``mu`` and ``sigma`` from a reference ``.npz`` (the original's ``gt_stat.npz``)."""
    try:
        with np.load(path) as d:
            return d["mu"], d["sigma"]
    except FileNotFoundError:
        raise OFAError(f"{path}: no such reference statistics file") from None
    except (KeyError, ValueError, OSError) as e:
        raise OFAError(f"{path}: not reference statistics (an .npz with mu and sigma): {e}") from None


def _import_error(what: str, e: Exception) -> OFAError:
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    return OFAError(f"{what} needs pytorch-fid and a working torchvision (pip install pytorch-fid) and their "
                    f"Inception weights; importing them failed: {detail}")


def inception_outputs(images: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Pool features (N, 2048) of PIL images from ``pytorch-fid``'s InceptionV3 (FID's network),
    and class probabilities (N, 1000) from torchvision's Inception v3 (what the original's
    ``inception_score.py`` uses)."""
    try:
        import torch
        from pytorch_fid.inception import InceptionV3
        from torchvision.models import inception_v3
    except Exception as e:  # ImportError, or torchvision failing to load its operators
        raise _import_error("FID/IS", e) from None
    fid_net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], normalize_input=True).eval()
    cls_net = inception_v3(weights="DEFAULT", transform_input=False).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats, probs = [], []
    with torch.no_grad():
        for im in images:
            x = torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)[None]
            feats.append(fid_net(x)[0].flatten(1).numpy())
            x299 = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            probs.append(torch.softmax(cls_net((x299 - mean) / std), dim=1).numpy())
    return np.concatenate(feats), np.concatenate(probs)


def fid_and_is(images: Sequence, reference: str | Path) -> dict[str, float]:
    """FID of ``images`` against the reference statistics file, and their Inception Score."""
    mu, sigma = load_statistics(reference)
    pool, probs = inception_outputs(images)
    m, s = statistics(pool)
    is_mean, is_std = inception_score(probs)
    return {"FID": frechet_distance(m, s, mu, sigma), "IS": is_mean, "IS std": is_std}
