"""The typed config: dataclass schemas of the Hydra config groups (registered in the ConfigStore so
types fail at compose time), and `validate.check` for ranges and closed sets before any work."""

from lmgcot.config.store import register, transport_keys

__all__ = ["register", "transport_keys"]
