"""Which failures of a Ray cache build are the cluster's (a node, an actor, a worker or a block lost) and not the
recommender's or the data's: only those are worth a fresh attempt on the surviving nodes (``ray_build``)."""

from __future__ import annotations

from recdata.errors import ConfigError, UserError

__all__ = ["lost_to_the_cluster"]


def lost_to_the_cluster(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is the loss of a node, an actor, a worker or a block, and not an error
    of the recommender or the data: a fresh attempt on the surviving nodes may then finish."""
    import ray

    lost = (ray.exceptions.ObjectLostError, ray.exceptions.RayActorError, ray.exceptions.NodeDiedError,
            ray.exceptions.WorkerCrashedError, ray.exceptions.LocalRayletDiedError)
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any(isinstance(e, (ray.exceptions.UserCodeException, UserError, ConfigError)) for e in chain):
        return False
    return any(isinstance(e, lost) for e in chain)
