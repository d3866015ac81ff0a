"""IPA's LSTM load predictor (Ghafouri et al., JSys 2024; DESIGN.md section 7).

Input: the maximum requests-per-second of each of the last 12 steps of 10 s (120 s of per-second arrivals,
oldest first). Output: the maximum rps over the next 20 s. One LSTM layer of 25 units and a dense output, as in
IPA; inputs and output are divided by a fixed ``scale_rps`` stored with the weights.

Training uses only the Twitter training split (days 0-13, `rlscale.workload.training_split`), damped by 8 like
IPA's evaluation windows; the last day is held out for validation. The evaluation windows are only *reported*
on, after the weights are written. Inference (numpy only) is `rlscale.lstm`; this module
trains (torch) and writes the weights it reads.

Train with ``python -m agents.lstm --out rlscale/data/lstm_predictor.npz`` (``make lstm``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlscale import workload
from rlscale.errors import RlscaleError
from rlscale.lstm import (  # noqa: F401 - inference, re-exported for the training code and its users
    _ARRAYS,
    DEFAULT_WEIGHTS,
    HISTORY_S,
    HISTORY_STEPS,
    HORIZON_S,
    SCALE_RPS,
    STEP_S,
    TRAINED_PEAK_RPS,
    LSTMPredictor,
    LSTMWeights,
    _bundled_weights,
    features,
    load_weights,
    predict_from_history,
    save_weights,
)

log = logging.getLogger(__name__)


# --- training data -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Samples:
    """Supervised samples cut from one per-second series.

    Attributes:
        x_rps: (n, 12) step maxima of the 120 s before each decision time.
        y_rps: (n,) max rps of the 20 s after it.
        end_s: (n,) decision times (seconds into the series); sample i reads ``[end_s-120, end_s+20)``.
    """

    x_rps: np.ndarray
    y_rps: np.ndarray
    end_s: np.ndarray

    def __len__(self) -> int:
        return int(self.y_rps.size)

    def subset(self, index: np.ndarray) -> Samples:
        return Samples(self.x_rps[index], self.y_rps[index], self.end_s[index])

    @property
    def reactive_rps(self) -> np.ndarray:
        """The reactive baseline's prediction: the max of the last 10 s."""
        return self.x_rps[:, -1]


def make_samples(rps: np.ndarray, first_end_s: int = HISTORY_S, last_end_s: int | None = None) -> Samples:
    """One sample at every 10-s decision time ``t`` in ``[first_end_s, last_end_s]`` with a full window.

    Args:
        rps: per-second arrivals (already damped).
        first_end_s: earliest decision time; raised to 120 s so the history is complete, rounded up to 10 s.
        last_end_s: latest decision time; None (and any later value) means ``len(rps) - 20``.
    """
    rps = np.asarray(rps, dtype=float)
    n_steps = rps.size // STEP_S
    step_max = rps[: n_steps * STEP_S].reshape(n_steps, STEP_S).max(axis=1)
    last = rps.size - HORIZON_S if last_end_s is None else min(last_end_s, rps.size - HORIZON_S)
    first_step = -(-max(first_end_s, HISTORY_S) // STEP_S)
    ends = np.arange(first_step, last // STEP_S + 1) * STEP_S
    if ends.size == 0:
        return Samples(np.zeros((0, HISTORY_STEPS)), np.zeros(0), np.zeros(0, dtype=np.int64))
    windows = np.lib.stride_tricks.sliding_window_view(step_max, HISTORY_STEPS)
    j = ends // STEP_S
    x = windows[j - HISTORY_STEPS]
    y = np.max([step_max[j + k] for k in range(HORIZON_S // STEP_S)], axis=0)
    return Samples(x.copy(), y, ends.astype(np.int64))


def damped_training_split(damping: int = workload.IPA_DAMPING) -> np.ndarray:
    """The training split (days 0-13) damped like IPA's evaluation windows: ``floor(raw / damping)``."""
    return np.floor(workload.training_split() / damping)


def split_samples(rps: np.ndarray, val_days: int = 1) -> tuple[Samples, Samples]:
    """Training samples from all but the last ``val_days`` days of ``rps``; validation samples from those.

    No sample's window crosses into the other part: training windows end by the validation start and
    validation histories start at it.
    """
    val_start_s = rps.size - val_days * workload.SECONDS_PER_DAY
    if val_start_s < HISTORY_S + HORIZON_S:
        raise RlscaleError(f"series of {rps.size} s is too short to hold out {val_days} day(s)")
    train = make_samples(rps, last_end_s=val_start_s - HORIZON_S)
    val_rps = rps[val_start_s:]
    val = make_samples(val_rps)
    val = Samples(val.x_rps, val.y_rps, val.end_s + val_start_s)
    return train, val


def window_mae(weights: LSTMWeights, rps: np.ndarray) -> dict[str, float]:
    """MAE (rps) of the LSTM and of the reactive baseline over every full-history 10-s step of one series."""
    samples = make_samples(rps)
    return {
        "samples": len(samples),
        "lstm_mae_rps": _mae(weights.predict(samples.x_rps), samples.y_rps),
        "reactive_mae_rps": _mae(samples.reactive_rps, samples.y_rps),
    }


def _under(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of samples where the prediction is below the true maximum (the planner under-provisions)."""
    return float(np.mean(pred < true)) if true.size else float("nan")


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true))) if true.size else float("nan")


# --- training (torch imported here only) -------------------------------------------------------------------------


def train(
    out: Path,
    epochs: int = 10,
    seed: int = 0,
    *,
    max_samples: int | None = None,
    hidden_units: int = 25,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    quantile: float = 0.9,
    eval_traces: Sequence[str] = workload.IPA_PATTERNS,
) -> dict:
    """Train the LSTM on the damped training split, write its weights to ``out`` and report its errors.

    Args:
        out: where to write the ``.npz`` weights.
        epochs: passes over the training samples.
        seed: seeds weight initialisation (torch) and shuffling (numpy Generator).
        max_samples: use a random subset of at most this many training (and validation) samples; None uses all.
        hidden_units: LSTM units (IPA: 25).
        batch_size: samples per Adam step.
        learning_rate: Adam learning rate.
        quantile: the model predicts this quantile of the next 20 s maximum (pinball loss). A planner that
            provisions for the prediction violates the SLA whenever it is too low, so an upper quantile (0.9)
            trades a little over-provisioning for far fewer under-predictions; 0.5 gives the median (L1 loss).
        eval_traces: evaluation windows to *report* MAE on, read only after the weights are written.

    Returns:
        The report: sample counts, train/validation MAE of the LSTM and the reactive baseline, per-window MAE.
    """
    if epochs < 1:
        raise RlscaleError(f"epochs must be >= 1, got {epochs}")
    if not 0 < quantile < 1:
        raise RlscaleError(f"quantile must be in (0, 1), got {quantile}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    train_set, val_set = split_samples(damped_training_split())
    if max_samples is not None:
        train_set = train_set.subset(np.sort(rng.permutation(len(train_set))[:max_samples]))
        val_set = val_set.subset(np.sort(rng.permutation(len(val_set))[:max_samples]))
    log.info("training on %d samples, validating on %d (last day of the split)", len(train_set), len(val_set))
    weights = _fit(train_set, val_set, epochs, seed, rng, hidden_units, batch_size, learning_rate, quantile)
    save_weights(out, weights)
    report: dict = {
        "weights": str(out),
        "epochs": epochs,
        "seed": seed,
        "hidden_units": hidden_units,
        "scale_rps": SCALE_RPS,
        "train_samples": len(train_set),
        "val_samples": len(val_set),
        "train_mae_rps": _mae(weights.predict(train_set.x_rps), train_set.y_rps),
        "val_mae_rps": _mae(weights.predict(val_set.x_rps), val_set.y_rps),
        "val_reactive_mae_rps": _mae(val_set.reactive_rps, val_set.y_rps),
        "quantile": quantile,
        "val_under_rate": _under(weights.predict(val_set.x_rps), val_set.y_rps),
        "val_reactive_under_rate": _under(val_set.reactive_rps, val_set.y_rps),
        "train_wall_s": round(time.perf_counter() - started, 1),
    }
    # reported only; the weights are already fixed and written
    report["eval"] = {name: window_mae(weights, workload.load_trace(name).rps) for name in eval_traces}
    return report


def _fit(
    train_set: Samples,
    val_set: Samples,
    epochs: int,
    seed: int,
    rng: np.random.Generator,
    hidden_units: int,
    batch_size: int,
    learning_rate: float,
    quantile: float,
) -> LSTMWeights:
    import torch

    threads = torch.get_num_threads()
    # one thread: this model is too small to gain from more, and spinning threads crawl on a busy machine
    torch.set_num_threads(1)
    try:
        return _fit_torch(
            torch, train_set, val_set, epochs, seed, rng, hidden_units, batch_size, learning_rate, quantile
        )
    finally:
        torch.set_num_threads(threads)


def _fit_torch(torch, train_set, val_set, epochs, seed, rng, hidden_units, batch_size, learning_rate, quantile):
    """The training loop proper (arguments as `_fit`'s; ``torch`` is the module, imported only for training)."""
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG state
        torch.manual_seed(seed)
        lstm = torch.nn.LSTM(input_size=1, hidden_size=hidden_units, batch_first=True)
        dense = torch.nn.Linear(hidden_units, 1)
    params = [*lstm.parameters(), *dense.parameters()]
    optimiser = torch.optim.Adam(params, lr=learning_rate)
    steps_per_epoch = -(-len(train_set) // batch_size)
    # cosine decay to zero: the last epochs settle instead of ending on a noisy step
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * steps_per_epoch)
    x_all = torch.as_tensor(train_set.x_rps / SCALE_RPS, dtype=torch.float32).unsqueeze(-1)
    y_all = torch.as_tensor(train_set.y_rps / SCALE_RPS, dtype=torch.float32)

    def model(x: torch.Tensor) -> torch.Tensor:
        seq, _ = lstm(x)
        return dense(seq[:, -1]).squeeze(-1)

    for epoch in range(epochs):
        order = torch.as_tensor(rng.permutation(len(train_set)))
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            err = y_all[idx] - model(x_all[idx])
            loss = torch.maximum(quantile * err, (quantile - 1) * err).mean()  # pinball loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        weights = _export(lstm, dense)
        val_mae = _mae(weights.predict(val_set.x_rps), val_set.y_rps)
        log.info(
            "epoch %d/%d: train pinball %.3f rps, val MAE %.3f rps",
            epoch + 1,
            epochs,
            total / len(order) * SCALE_RPS,
            val_mae,
        )
    return _export(lstm, dense)


def _export(lstm, dense) -> LSTMWeights:
    """Copy torch parameters (rounded to float32, as stored) into `LSTMWeights`."""

    def arr(t) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32).astype(float)

    return LSTMWeights(
        w_ih=arr(lstm.weight_ih_l0),
        w_hh=arr(lstm.weight_hh_l0),
        b_ih=arr(lstm.bias_ih_l0),
        b_hh=arr(lstm.bias_hh_l0),
        w_out=arr(dense.weight),
        b_out=arr(dense.bias),
        scale_rps=SCALE_RPS,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m agents.lstm --out PATH [--epochs N] [--seed S]``: train, write the weights, print the report."""
    parser = argparse.ArgumentParser(prog="python -m agents.lstm", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="where to write the .npz weights")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training samples")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling")
    parser.add_argument("--quantile", type=float, default=0.9, help="quantile of the next-20 s max to predict")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = train(args.out, epochs=args.epochs, seed=args.seed, quantile=args.quantile)
    except RlscaleError as exc:
        parser.exit(1, f"error: {exc}\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
