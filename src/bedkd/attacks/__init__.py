"""Attacks that build backdoored training data and victims (one file per attack)."""
from ..errors import ConfigError
from .addsent import AddSent
from .badnets import BadNets
from .base import AttackConfig, BackdoorAttack, PoisonedData, TextAttack
from .paraphrase import ParaphraseAttack
from .stylebkd import StyleBkd
from .synbkd import SynBkd

ATTACKS: dict[str, type[BackdoorAttack]] = {cls.name: cls for cls in (BadNets, AddSent, SynBkd, StyleBkd)}


def make_attack(name: str, cfg: AttackConfig, dataset: str | None = None, data_dir=None) -> BackdoorAttack:
    """The attack ``name``; SynBkd and StyleBkd read paraphrases of a data-pack ``dataset``
    (``data_dir`` None: ``$BEDKD_DATA_DIR``)."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack '{name}'; choose from {', '.join(ATTACKS)}")
    cls = ATTACKS[name]
    if cfg.style is not None and cls is not StyleBkd:
        raise ConfigError(f"'{name}' takes no style (only stylebkd does)")
    if not cls.needs_data_pack:
        return cls(cfg)
    if dataset is None:
        raise ConfigError(f"'{name}' reads the data pack's paraphrases: name the dataset (sst2, olid, agnews)")
    if cls is StyleBkd:
        return StyleBkd(cfg, data_dir, dataset, cfg.style or StyleBkd.default_style)
    return cls(cfg, data_dir, dataset)


__all__ = ["ATTACKS", "AttackConfig", "BackdoorAttack", "PoisonedData", "TextAttack", "ParaphraseAttack",
           "BadNets", "AddSent", "SynBkd", "StyleBkd", "make_attack"]
