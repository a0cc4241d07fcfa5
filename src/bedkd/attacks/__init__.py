"""Attacks that build backdoored training data (one file per attack)."""
from ..errors import ConfigError
from .addsent import AddSent
from .badnets import BadNets
from .base import AttackConfig, PoisonedData, TextAttack

ATTACKS: dict[str, type[TextAttack]] = {cls.name: cls for cls in (BadNets, AddSent)}


def make_attack(name: str, cfg: AttackConfig) -> TextAttack:
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack '{name}'; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name](cfg)


__all__ = ["ATTACKS", "AttackConfig", "PoisonedData", "TextAttack", "BadNets", "AddSent", "make_attack"]
