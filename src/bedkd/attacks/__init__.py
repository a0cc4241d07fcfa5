"""Attacks that build backdoored training data (one file per attack)."""
from ..errors import ConfigError
from .addsent import AddSent
from .badnets import BadNets
from .base import AttackConfig, PoisonedData, TextAttack
from .paraphrase import ParaphraseAttack
from .stylebkd import StyleBkd
from .synbkd import SynBkd

ATTACKS: dict[str, type[TextAttack]] = {cls.name: cls for cls in (BadNets, AddSent)}
# Not in ATTACKS: these need the data pack and a dataset name, not just an AttackConfig.
PARAPHRASE_ATTACKS: dict[str, type[ParaphraseAttack]] = {cls.name: cls for cls in (SynBkd, StyleBkd)}


def make_attack(name: str, cfg: AttackConfig) -> TextAttack:
    if name in PARAPHRASE_ATTACKS:
        raise ConfigError(f"'{name}' reads pre-computed paraphrases: use make_paraphrase_attack")
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack '{name}'; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name](cfg)


def make_paraphrase_attack(name: str, cfg: AttackConfig, data_dir=None, dataset: str = "sst2",
                           style: str | None = None) -> ParaphraseAttack:
    """SynBkd or StyleBkd on a data-pack dataset (``data_dir`` None: ``$BEDKD_DATA_DIR``)."""
    if name not in PARAPHRASE_ATTACKS:
        raise ConfigError(f"unknown paraphrase attack '{name}'; choose from {', '.join(PARAPHRASE_ATTACKS)}")
    if name == StyleBkd.name:
        return StyleBkd(cfg, data_dir, dataset, style or StyleBkd.default_style)
    if style is not None:
        raise ConfigError(f"'{name}' takes no style")
    return SynBkd(cfg, data_dir, dataset)


__all__ = ["ATTACKS", "PARAPHRASE_ATTACKS", "AttackConfig", "PoisonedData", "TextAttack", "ParaphraseAttack",
           "BadNets", "AddSent", "SynBkd", "StyleBkd", "make_attack", "make_paraphrase_attack"]
