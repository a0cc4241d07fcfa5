"""Attacks that build backdoored training data and victims (one file per attack)."""
from ..errors import ConfigError
from .addsent import AddSent
from .badnets import BadNets
from .base import AttackConfig, Backdoor, BackdoorAttack, PoisonedData, TextAttack
from .decoy import Decoy, DecoyConfig
from .ep import EP, EPConfig
from .multi import Multi, MultiConfig
from .no_attack import NoAttack
from .paraphrase import ParaphraseAttack
from .sos import SOS, SOSConfig
from .stylebkd import StyleBkd
from .synbkd import SynBkd

ATTACKS: dict[str, type[BackdoorAttack]] = {cls.name: cls for cls in (BadNets, AddSent, SynBkd, StyleBkd, EP, SOS,
                                                                       Multi, Decoy)}
# Attacks with their own option record (CLI prefix: the attack's name).
ATTACK_OPTIONS = {name: cls.options_cls for name, cls in ATTACKS.items() if cls.options_cls is not None}


def make_attack(name: str, cfg: AttackConfig, dataset: str | None = None, data_dir=None,
                options=None) -> BackdoorAttack:
    """The attack ``name``; SynBkd and StyleBkd read paraphrases of a data-pack ``dataset``
    (``data_dir`` None: ``$BEDKD_DATA_DIR``); ``options`` is the attack's own record (EPConfig, SOSConfig,
    MultiConfig, DecoyConfig)."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack '{name}'; choose from {', '.join(ATTACKS)}")
    cls = ATTACKS[name]
    if options is not None and not (cls.options_cls and isinstance(options, cls.options_cls)):
        raise ConfigError(f"'{name}' takes {cls.options_cls.__name__ if cls.options_cls else 'no own options'}, "
                          f"not {type(options).__name__}")
    if cls is Multi:
        return Multi(cfg, options, dataset, data_dir)
    if cls.options_cls is not None:
        return cls(cfg, options)
    if not cls.needs_data_pack:
        return cls(cfg)
    if dataset is None:
        raise ConfigError(f"'{name}' reads the data pack's paraphrases: name the dataset (sst2, olid, agnews)")
    if cls is StyleBkd:
        return StyleBkd(cfg, data_dir, dataset, cfg.style or StyleBkd.default_style)
    return cls(cfg, data_dir, dataset)


__all__ = ["ATTACKS", "ATTACK_OPTIONS", "AttackConfig", "Backdoor", "BackdoorAttack", "PoisonedData", "TextAttack",
           "ParaphraseAttack", "BadNets", "AddSent", "SynBkd", "StyleBkd", "EP", "EPConfig", "SOS", "SOSConfig",
           "Multi", "MultiConfig", "Decoy", "DecoyConfig", "NoAttack", "make_attack"]
