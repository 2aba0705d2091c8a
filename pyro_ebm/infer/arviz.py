"""ArviZ conversion: chains as ``arviz.InferenceData`` with dims (chain, draw, *event) and standard sample stats."""

import warnings

import torch

with warnings.catch_warnings():
    # NB: ArviZ 0.23 announces its 1.0 refactor with a FutureWarning on import; it is not about our use.
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

#: pyro_ebm's per-step stats and their names in ArviZ's ``sample_stats`` group.
SAMPLE_STATS_NAMES = {
    "divergent": "diverging",
    "accept_prob": "acceptance_rate",
    "step_size": "step_size",
    "num_steps": "n_steps",
    "accepted": "accepted",
    "tree_depth": "tree_depth",
}


def to_inference_data(x, stats=None, *, var_name="x"):
    """
    Build an :class:`arviz.InferenceData` from chains.

    :param torch.Tensor x: samples of shape ``(num_chains, num_draws, *event_shape)``, chain first.
    :param dict stats: per-step statistics, each ``(num_chains, num_draws)``, keyed by pyro_ebm's names
        (``divergent``, ``accept_prob``, ``step_size``, ``num_steps``, ``accepted``); they are stored under
        ArviZ's standard names (``diverging``, ``acceptance_rate``, ``step_size``, ``n_steps``).
    :param str var_name: name of the variable in the ``posterior`` group.
    :raises ValueError: if a stat's shape is not ``(num_chains, num_draws)``. ArviZ itself would accept
        ``(draw, chain)`` silently, so the order is checked here.
    """
    if x.dim() < 2:
        raise ValueError(f"samples must have shape (chain, draw, *event_shape), got {tuple(x.shape)}")
    num_chains, num_draws = x.shape[:2]
    sample_stats = {}
    for name, value in (stats or {}).items():
        value = torch.as_tensor(value)
        if value.shape != (num_chains, num_draws):
            raise ValueError(
                f"stat {name!r} has shape {tuple(value.shape)}, expected (chain, draw) = ({num_chains}, {num_draws})"
            )
        sample_stats[SAMPLE_STATS_NAMES.get(name, name)] = _numpy(value)
    event_dims = [f"{var_name}_dim_{i}" for i in range(x.dim() - 2)]
    with warnings.catch_warnings():
        # NB: the (chain, draw) order is checked above; ArviZ's "more chains than draws" guess is then noise
        # (many short chains are the normal case here)
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        return az.from_dict(
            posterior={var_name: _numpy(x)},
            sample_stats=sample_stats or None,
            dims={var_name: event_dims},
        )


def ais_to_inference_data(result, *, var_name="x"):
    """
    An AIS or importance-sampling run (:class:`~pyro_ebm.infer.LogPartitionEstimate`) as an
    :class:`arviz.InferenceData`: the final chains in ``posterior`` with dims ``(chain, draw=1, *event)``, each AIS
    chain being one ArviZ chain; ``log_weight`` in ``sample_stats``; and, for AIS, ``beta`` and the mean
    ``acceptance_rate`` at each temperature in ``constant_data`` (dim ``temperature``).
    """
    x = result.samples
    n = x.shape[0]
    event_dims = [f"{var_name}_dim_{i}" for i in range(x.dim() - 1)]
    constant_data, dims = {}, {var_name: event_dims}
    if result.betas is not None:
        constant_data["beta"] = _numpy(result.betas)
        dims["beta"] = ["temperature"]
    if result.accept_prob is not None:
        constant_data["acceptance_rate"] = _numpy(result.accept_prob)
        dims["acceptance_rate"] = ["transition"]
    with warnings.catch_warnings():
        # NB: one draw per AIS chain is the intended layout; ArviZ warns about "more chains than draws"
        warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        return az.from_dict(
            posterior={var_name: _numpy(x.reshape((n, 1) + x.shape[1:]))},
            sample_stats={"log_weight": _numpy(result.log_weights.reshape(n, 1))},
            constant_data=constant_data or None,
            dims=dims,
            attrs={"method": result.method, "log_partition": float(result.log_partition),
                   "stderr": float(result.stderr)},
        )


def _numpy(t):
    t = t.detach().cpu()
    return t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()


__all__ = ["SAMPLE_STATS_NAMES", "ais_to_inference_data", "to_inference_data"]
