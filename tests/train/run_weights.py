"""Shared by the training tests: the weights of a run's newest checkpoint."""

from safetensors.torch import load_file

from oat.checkpoint import resolve_checkpoint


def final_weights(run) -> dict:
    """Tensors of ``run``'s newest checkpoint (``checkpoints/latest``)."""
    return load_file(str(resolve_checkpoint(run) / "model.safetensors"))


def on_objective_call(monkeypatch, at_call: int, before=None, after=None) -> dict:
    """Wrap the objective that ``oat train`` builds: on its ``at_call``-th call run ``before()``
    first and pass the loss through ``after(loss)``; returns the call counter."""
    from oat.train import runner

    build, calls = runner.build_objective, {"n": 0}

    def patched(cfg, spec, eps):
        obj = build(cfg, spec, eps)

        def wrapped(*a, **kw):
            calls["n"] += 1
            hit = calls["n"] == at_call
            if hit and before is not None:
                before()
            loss, metrics = obj(*a, **kw)
            return (after(loss) if hit and after is not None else loss), metrics

        return wrapped

    monkeypatch.setattr(runner, "build_objective", patched)
    return calls
