"""Records the learning rates PyTorch's `SWALR` gives, for `tests/averaging/test_swa_schedule.py`.

Run from the repository root (needs `pip install torch==2.13.0`):

    .venv/bin/python tests/averaging/make_swalr_fixture.py

It writes `tests/averaging/fixtures/swalr.json`; the test also calls `torch_learning_rates` live when torch imports.

How torch's indexing maps to `SWASchedule(schedule, swa_lr, swa_start=S, anneal_steps=A)`
-------------------------------------------------------------------------------------------

Keras optimizer step `i` (0-based: `optimizer.iterations == i` during the update) uses `schedule(i)`. In torch, step
`i` uses `param_groups[0]["lr"]` at the time of `optimizer.step()` number `i`; `lrs[i]` below is that value.

    for i in range(total_steps):
        if i == S:
            swalr = SWALR(opt, swa_lr, anneal_epochs=A, anneal_strategy=...)  # constructed as step S begins
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if i < S:       set the lr of step i + 1 from the pre-start schedule (by hand; a constant lr is left alone)
        else:           swalr.step()

* Before the start (`i < S`): `lrs[i] == schedule(i)`.
* SWALR's constructor makes one internal step (`_step_count == 1`, `get_lr` sees `step = 0`); its n-th `.step()`
  afterwards sees `step = n` and sets the lr of optimizer step `S + n`. So `k = i - S` in `SWASchedule` is exactly
  torch's `self._step_count - 1` while step `i` runs.
* `get_lr` recovers the lr it started from (`_get_initial_lr` inverts the previous interpolation), so with
  `lr_start = schedule(S)` (the group's lr when SWALR took over):
  `lrs[S + k] = swa_lr * alpha + lr_start * (1 - alpha)`, `alpha = anneal(clip(k / A, 0, 1))`; for `A == 0` torch
  takes `step = max(1, step)`, so `alpha = 1` already at `k = 0`: the lr jumps to `swa_lr` at step S.
* The loop in torch's SWALR docstring constructs SWALR before training and calls `swa_scheduler.step()` after epoch
  `i > swa_start_torch`: for `A > 0` the construction changes nothing (alpha 0) and that loop gives the same lrs with
  `S = swa_start_torch + 1` (the case `cos_doc_loop` checks it). For `A == 0` that loop differs: the constructor already
  sets the lr to `swa_lr` before the first step (the case `jump_doc_loop` records it; SWASchedule does not copy it).
"""

import json
import math
import pathlib

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "swalr.json"
TORCH_VERSION = "2.13.0"

# One entry per case: the pre-start schedule ("constant" lr 0.1, or "cosine": torch's CosineAnnealingLR closed form
# from 0.1 over `decay_steps` to 0, which keras.optimizers.schedules.CosineDecay(0.1, decay_steps) computes), the
# SWALR arguments and S = `swa_start`.
CASES = {
    "cos": dict(pre="constant", swa_start=4, anneal_steps=5, anneal_strategy="cos", total_steps=14),
    "linear": dict(pre="constant", swa_start=4, anneal_steps=5, anneal_strategy="linear", total_steps=14),
    "jump": dict(pre="constant", swa_start=4, anneal_steps=0, anneal_strategy="cos", total_steps=10),
    "start_zero": dict(pre="constant", swa_start=0, anneal_steps=3, anneal_strategy="cos", total_steps=8),
    "cosine_decay_cos": dict(
        pre="cosine", decay_steps=10, swa_start=6, anneal_steps=5, anneal_strategy="cos", total_steps=16
    ),
    "cosine_decay_linear": dict(
        pre="cosine", decay_steps=10, swa_start=6, anneal_steps=5, anneal_strategy="linear", total_steps=16
    ),
    "cos_doc_loop": dict(
        pre="constant", swa_start=4, anneal_steps=5, anneal_strategy="cos", total_steps=14, doc_loop=True
    ),
    "jump_doc_loop": dict(
        pre="constant", swa_start=4, anneal_steps=0, anneal_strategy="cos", total_steps=10, doc_loop=True
    ),
}
LR, SWA_LR = 0.1, 0.01


def pre_start_lr(case, i):
    """The pre-start learning rate of optimizer step `i`, computed by hand."""
    if case["pre"] == "constant":
        return LR
    t = min(i, case["decay_steps"]) / case["decay_steps"]
    return LR * (1 + math.cos(math.pi * t)) / 2  # CosineAnnealingLR(T_max=decay_steps, eta_min=0), closed form


def torch_learning_rates(case):
    """The lr torch's SGD uses at each optimizer step of `case` (see the module docstring for the loop)."""
    import warnings

    import torch
    from torch.optim.swa_utils import SWALR

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=pre_start_lr(case, 0))
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    start, doc_loop = case["swa_start"], case.get("doc_loop", False)

    def make_swalr():
        return SWALR(opt, swa_lr=SWA_LR, anneal_epochs=case["anneal_steps"], anneal_strategy=case["anneal_strategy"])

    swalr = make_swalr() if doc_loop else None
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimizer.step() before lr_scheduler.step()" is not relevant here
        for i in range(case["total_steps"]):
            if i == start and not doc_loop:
                swalr = make_swalr()
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            if i < start:
                if case["pre"] != "constant":  # a constant lr is left as it is (a run with no pre-start scheduler)
                    for group in opt.param_groups:
                        group["lr"] = pre_start_lr(case, i + 1)
            else:
                swalr.step()
    return lrs


def main():
    import torch

    assert torch.__version__.split("+")[0] == TORCH_VERSION, torch.__version__
    cases = {name: dict(case, learning_rates=torch_learning_rates(case)) for name, case in CASES.items()}
    payload = {"torch_version": torch.__version__, "lr": LR, "swa_lr": SWA_LR, "cases": cases}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {FIXTURE}")


if __name__ == "__main__":
    main()
