"""IPA's LSTM load predictor (Ghafouri et al., JSys 2024; DESIGN.md section 7).

Input: the maximum requests-per-second of each of the last 12 steps of 10 s (120 s of per-second arrivals,
oldest first). Output: the maximum rps over the next 20 s. One LSTM layer of 25 units and a dense output, as in
IPA; inputs and output are divided by a fixed ``scale_rps`` stored with the weights.

This module is the inference, numpy only (no torch import), used by every policy and by the sidecar: the weights
live in a small ``.npz`` (``rlscale/data/lstm_predictor.npz``) and the forward pass follows torch's gate order
(i, f, g, o). Training is `agents.lstm` (``make lstm``), on the Twitter training split only.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.types import PipelineState

log = logging.getLogger(__name__)

STEP_S = 10
HISTORY_STEPS = 12
HISTORY_S = STEP_S * HISTORY_STEPS
HORIZON_S = 20
SCALE_RPS = 50.0  # fixed normaliser: above the damped training split's peak (48 rps)
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "data" / "lstm_predictor.npz"  # rlscale/data
_ARRAYS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_out", "b_out", "scale_rps")


def features(rps_history: np.ndarray) -> np.ndarray:
    """The 12 step maxima (oldest first) of the last 120 s of per-second arrivals.

    Args:
        rps_history: per-second arrival counts, most recent last. Shorter histories are padded on the left with
            their oldest value; an empty history gives zeros.

    Returns:
        float64 array of shape (12,): ``max(rps[t-120+10k : t-110+10k])`` for k = 0..11.
    """
    rps = np.asarray(rps_history, dtype=float).ravel()[-HISTORY_S:]
    if rps.size == 0:
        return np.zeros(HISTORY_STEPS)
    if rps.size < HISTORY_S:
        rps = np.concatenate([np.full(HISTORY_S - rps.size, rps[0]), rps])
    return rps.reshape(HISTORY_STEPS, STEP_S).max(axis=1)


@dataclass(frozen=True)
class LSTMWeights:
    """One LSTM layer plus a dense output, in torch's layout (gate rows ordered i, f, g, o).

    Attributes:
        w_ih: (4H, 1) input weights. w_hh: (4H, H) recurrent weights. b_ih, b_hh: (4H,) biases.
        w_out: (1, H) dense weights. b_out: (1,) dense bias.
        scale_rps: inputs are divided by it and the output multiplied by it.
    """

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray
    scale_rps: float

    @property
    def hidden_units(self) -> int:
        return int(self.w_hh.shape[1])

    def forward(self, x_rps: np.ndarray) -> np.ndarray:
        """Predicted next-20-s max rps (unclipped) for a batch of feature rows of shape (n, 12)."""
        x = np.asarray(x_rps, dtype=float) / self.scale_rps
        hidden = self.hidden_units
        # input contributions of all steps at once; only the recurrence is sequential
        gates_x = x[:, :, None] * self.w_ih[:, 0] + (self.b_ih + self.b_hh)
        h = np.zeros((x.shape[0], hidden))
        c = np.zeros((x.shape[0], hidden))
        w_hh_t = self.w_hh.T
        for step in range(x.shape[1]):
            gates = gates_x[:, step] + h @ w_hh_t
            sig = 0.5 * (1.0 + np.tanh(0.5 * gates))  # overflow-free sigmoid
            i, f, o = sig[:, :hidden], sig[:, hidden : 2 * hidden], sig[:, 3 * hidden :]
            g = np.tanh(gates[:, 2 * hidden : 3 * hidden])
            c = f * c + i * g
            h = o * np.tanh(c)
        return (h @ self.w_out.T + self.b_out)[:, 0] * self.scale_rps

    def predict(self, x_rps: np.ndarray) -> np.ndarray:
        """Forward pass clipped at 0 rps."""
        return np.maximum(self.forward(x_rps), 0.0)


def save_weights(path: Path, weights: LSTMWeights) -> None:
    """Write the weights as float32 arrays (``scale_rps`` as float64) to an uncompressed ``.npz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(getattr(weights, name), dtype=np.float32) for name in _ARRAYS[:-1]}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, scale_rps=np.float64(weights.scale_rps))


def load_weights(path: Path) -> LSTMWeights:
    """Read weights written by `save_weights`.

    Raises:
        RlscaleError: the file is missing, unreadable, lacks an array, or the shapes do not fit together.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name], dtype=float) for name in _ARRAYS}
    except FileNotFoundError:
        raise RlscaleError(f"{path}: LSTM weights not found (train them with `make lstm`)") from None
    except KeyError as exc:
        raise RlscaleError(f"{path}: corrupt LSTM weights: missing array {exc}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RlscaleError(f"{path}: corrupt LSTM weights: {exc}") from None
    hidden = arrays["w_hh"].shape[-1] if arrays["w_hh"].ndim == 2 else -1
    expected = {
        "w_ih": (4 * hidden, 1),
        "w_hh": (4 * hidden, hidden),
        "b_ih": (4 * hidden,),
        "b_hh": (4 * hidden,),
        "w_out": (1, hidden),
        "b_out": (1,),
        "scale_rps": (),
    }
    for name, shape in expected.items():
        if hidden < 1 or arrays[name].shape != shape:
            raise RlscaleError(f"{path}: corrupt LSTM weights: {name} has shape {arrays[name].shape}, need {shape}")
    if not all(np.isfinite(a).all() for a in arrays.values()) or arrays["scale_rps"] <= 0:
        raise RlscaleError(f"{path}: corrupt LSTM weights: non-finite values or scale_rps <= 0")
    scale_rps = float(arrays.pop("scale_rps"))
    return LSTMWeights(**arrays, scale_rps=scale_rps)


@cache
def _bundled_weights() -> LSTMWeights:
    return load_weights(DEFAULT_WEIGHTS)


def predict_from_history(rps_history: np.ndarray, weights: LSTMWeights | None = None) -> float:
    """Predicted max rps over the next 20 s from per-second arrivals (most recent last); 0.0 if empty."""
    rps = np.asarray(rps_history, dtype=float)
    if rps.size == 0:
        return 0.0
    weights = weights if weights is not None else _bundled_weights()
    return float(weights.predict(features(rps)[None, :])[0])


# the damped training split's busy-hour peaks; above this the history is rescaled (see LSTMPredictor)
TRAINED_PEAK_RPS = 40.0


class LSTMPredictor:
    """IPA's LSTM predictor behind the `Predictor` protocol.

    The bundled weights are trained at the damped (divide-by-8) scale, peaks of 34-48 rps; an LSTM saturates
    beyond the range it was trained on, so histories that exceed ``TRAINED_PEAK_RPS`` in the last 120 s are
    scaled down into that range, predicted, and scaled back (undamped traces such as ``infadapter``, 274 rps).

    Args:
        weights_path: an ``.npz`` written by `train`; None uses the bundled ``rlscale/data/lstm_predictor.npz``.

    Raises:
        RlscaleError: the weights file is missing or corrupt.
    """

    name = "lstm"

    def __init__(self, weights_path: Path | None = None) -> None:
        self.weights = _bundled_weights() if weights_path is None else load_weights(Path(weights_path))

    def predict(self, state: PipelineState) -> float:
        """Max rps expected over the next 20 s, from ``state.arrival_rps``."""
        hist = np.asarray(state.arrival_rps, dtype=float)
        peak = float(hist[-HISTORY_S:].max()) if hist.size else 0.0
        factor = peak / TRAINED_PEAK_RPS if peak > TRAINED_PEAK_RPS else 1.0
        return factor * predict_from_history(hist / factor, self.weights)
