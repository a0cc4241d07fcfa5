"""Option records (bedkd.options) and the CLI flags generated from them."""
from __future__ import annotations

import dataclasses

import pytest

from bedkd.attacks import AttackConfig
from bedkd.cli import build_parser, main
from bedkd.cli.commands import _config
from bedkd.defenses import PRESETS, AKDConfig, DMMConfig, ScanConfig
from bedkd.errors import BedkdError, ConfigError
from bedkd.modeling import TrainConfig
from bedkd.options import Options, option, options_from_args

ALL_CONFIGS = (DMMConfig, AKDConfig, TrainConfig, AttackConfig)


@pytest.mark.parametrize("cls", ALL_CONFIGS)
def test_defaults_are_valid_and_round_trip(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict(), dict)


@pytest.mark.parametrize("cls, changes, fragment", [
    (DMMConfig, {"flip_per_class": 0}, "DMMConfig.flip_per_class must be >= 1"),
    (DMMConfig, {"epochs": 0}, "DMMConfig.epochs must be >= 1"),
    (DMMConfig, {"temperature": 0.0}, "DMMConfig.temperature must be > 0"),
    (DMMConfig, {"ce_weight": 1.01}, "DMMConfig.ce_weight must be <= 1"),
    (DMMConfig, {"ce_weight": -0.1}, "DMMConfig.ce_weight must be >= 0"),
    (DMMConfig, {"threshold": 0}, "DMMConfig.threshold must be > 0"),
    (DMMConfig, {"max_flagged": 0}, "DMMConfig.max_flagged must be >= 1"),
    (DMMConfig, {"max_kept": -3}, "DMMConfig.max_kept must be >= 1"),
    (DMMConfig, {"max_length": 7}, "DMMConfig.max_length must be >= 8"),
    (DMMConfig, {"seed": -1}, "DMMConfig.seed must be >= 0"),
    (AKDConfig, {"epochs": 0}, "AKDConfig.epochs must be >= 1"),
    (AKDConfig, {"trust_per_class": 0}, "AKDConfig.trust_per_class"),
    (AKDConfig, {"val_per_class": -1}, "AKDConfig.val_per_class"),
    (AKDConfig, {"lr": 0.0}, "AKDConfig.lr must be > 0"),
    (AKDConfig, {"lr": -1e-5}, "AKDConfig.lr must be > 0"),
    (AKDConfig, {"batch_size": 0}, "AKDConfig.batch_size"),
    (AKDConfig, {"punish_cap": 0.0}, "AKDConfig.punish_cap must be > 0"),
    (AKDConfig, {"grad_clip": -1.0}, "AKDConfig.grad_clip must be > 0"),
    (AKDConfig, {"selection": "best"}, "AKDConfig.selection must be one of validation, last"),
    (AKDConfig, {"abort_cacc_drop": 0.0}, "AKDConfig.abort_cacc_drop must be > 0"),
    (AKDConfig, {"patience": 0}, "AKDConfig.patience must be >= 1"),
    (AKDConfig, {"val_per_class": 0}, "val_per_class > 0"),  # cross-field check with selection='validation'
    (TrainConfig, {"epochs": 0}, "TrainConfig.epochs must be >= 1"),
    (TrainConfig, {"lr": 0.0}, "TrainConfig.lr must be > 0"),
    (TrainConfig, {"batch_size": 0}, "TrainConfig.batch_size must be >= 1"),
    (TrainConfig, {"weight_decay": -0.1}, "TrainConfig.weight_decay must be >= 0"),
    (TrainConfig, {"warmup": 1.5}, "TrainConfig.warmup must be <= 1"),
    (TrainConfig, {"max_length": 4}, "TrainConfig.max_length must be >= 8"),
    (AttackConfig, {"rate": 0.0}, "AttackConfig.rate must be > 0"),
    (AttackConfig, {"rate": 1.2}, "AttackConfig.rate must be <= 1"),
    (AttackConfig, {"target": -1}, "AttackConfig.target must be >= 0"),
    (AttackConfig, {"max_insertions": 0}, "AttackConfig.max_insertions must be >= 1"),
    (AttackConfig, {"triggers": ["cf", "  "]}, "must not contain empty strings"),
])
def test_out_of_range_values_raise(cls, changes, fragment):
    with pytest.raises(ConfigError) as info:
        cls(**changes)
    assert fragment in str(info.value)
    assert isinstance(info.value, BedkdError)
    # the same check runs through from_dict and replace
    with pytest.raises(ConfigError):
        cls.from_dict(changes)
    with pytest.raises(ConfigError):
        cls().replace(**changes)


@pytest.mark.parametrize("cls, changes", [
    (DMMConfig, {"max_kept": None}),
    (DMMConfig, {"max_flagged": None}),
    (DMMConfig, {"ce_weight": 0}),          # int where a float is expected
    (DMMConfig, {"ce_weight": 1.0}),        # inclusive upper bound
    (AKDConfig, {"punish_cap": None, "grad_clip": None, "patience": None}),
    (AKDConfig, {"val_per_class": 0, "selection": "last"}),
    (AKDConfig, {"lr": 1}),
    (TrainConfig, {"warmup": 0.0, "weight_decay": 0.0, "max_length": 8}),
    (AttackConfig, {"rate": 1.0, "target": 0, "triggers": ["cf", "mn"]}),
    (AttackConfig, {"triggers": ("a tuple", "works")}),
])
def test_boundary_and_optional_values_accepted(cls, changes):
    cfg = cls(**changes)
    for key, value in changes.items():
        assert getattr(cfg, key) == value


@pytest.mark.parametrize("cls, changes, fragment", [
    (TrainConfig, {"epochs": "3"}, "TrainConfig.epochs must be int"),
    (TrainConfig, {"epochs": 3.0}, "TrainConfig.epochs must be int"),
    (TrainConfig, {"epochs": True}, "TrainConfig.epochs must be int"),
    (TrainConfig, {"lr": "0.1"}, "TrainConfig.lr must be float"),
    (TrainConfig, {"lr": False}, "TrainConfig.lr must be float"),
    (TrainConfig, {"seed": None}, "TrainConfig.seed must not be None"),
    (AKDConfig, {"selection": 1}, "AKDConfig.selection must be str"),
    (AKDConfig, {"patience": 2.5}, "AKDConfig.patience must be int"),
    (AKDConfig, {"punish_cap": "3"}, "AKDConfig.punish_cap must be float"),
    (DMMConfig, {"max_kept": "10"}, "DMMConfig.max_kept must be int"),
    (AttackConfig, {"triggers": "cf"}, "AttackConfig.triggers must be a list"),
    (AttackConfig, {"triggers": None}, "AttackConfig.triggers must not be None"),
])
def test_wrong_type_raises(cls, changes, fragment):
    with pytest.raises(ConfigError) as info:
        cls(**changes)
    assert fragment in str(info.value)


@pytest.mark.parametrize("cls, key, suggestion", [
    (AKDConfig, "epoch", "epochs"),
    (AKDConfig, "temprature", "temperature"),
    (DMMConfig, "treshold", "threshold"),
    (TrainConfig, "batchsize", "batch_size"),
    (AttackConfig, "trigger", "triggers"),
])
def test_from_dict_misspelt_key_has_hint(cls, key, suggestion):
    with pytest.raises(ConfigError) as info:
        cls.from_dict({key: 1})
    message = str(info.value)
    assert f"unknown option '{key}'" in message
    assert f"did you mean '{suggestion}'?" in message
    assert cls.__name__ in message


def test_from_dict_unknown_key_without_close_match():
    with pytest.raises(ConfigError) as info:
        AKDConfig.from_dict({"zzzzzzzz": 1})
    assert "unknown option 'zzzzzzzz'" in str(info.value)
    assert "did you mean" not in str(info.value)


def test_replace_returns_a_new_checked_record():
    base = AKDConfig()
    changed = base.replace(epochs=5, temperature=1.0)
    assert isinstance(changed, AKDConfig)
    assert (changed.epochs, changed.temperature) == (5, 1.0)
    assert base.epochs == 10  # original untouched
    others = {k: v for k, v in changed.to_dict().items() if k not in ("epochs", "temperature")}
    assert others == {k: v for k, v in base.to_dict().items() if k not in ("epochs", "temperature")}
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        base.replace(epoch=5)


def test_list_default_is_not_shared():
    a, b = AttackConfig(), AttackConfig()
    a.triggers.append("cf")
    assert b.triggers == []
    assert AttackConfig().triggers == []


def test_presets():
    dmm_fast, akd_fast, _ = PRESETS["fast"]
    dmm_ref, akd_ref, _ = PRESETS["reference"]
    assert akd_fast == AKDConfig() and dmm_fast == DMMConfig()
    assert akd_ref.epochs == 50
    assert akd_ref.selection == "last"
    assert akd_ref.punish_cap is None and akd_ref.grad_clip is None and akd_ref.patience is None


# -- CLI flags ------------------------------------------------------------------------------------
PURIFY = ["purify", "--model", "m", "--clean", "c.tsv", "--suspect", "s.tsv", "--out", "o"]


def _parse(*extra):
    return build_parser().parse_args(PURIFY + list(extra))


def _purify_configs(*extra):
    args = _parse(*extra)
    dmm_base, akd_base, _ = PRESETS[args.preset]
    return _config(DMMConfig, args, "dmm-", dmm_base), _config(AKDConfig, args, "akd-", akd_base)


def _flag_value(value) -> str:
    return "none" if value is None else str(value)


NEEDS = {"mse_padding": {"batch_order": "fixed"}, "guard_prior_shift": {"clean_prior_shift": True},
         "start_candidate": {"selection": "guarded"}, "prior_shift_keep": {"clean_prior_shift": True},
         "flag_tiebreak": {"selection": "guarded"}, "signed_proxy": {"selection": "guarded"},
         "untriggered_latest": {"selection": "guarded"}, "tie_break": {"selection": "guarded"},
         "untriggered_mean": {"selection": "guarded", "untriggered_latest": True},
         "target_rate_cap": {"selection": "guarded"}, "guard_mix_shift": {"selection": "guarded"},
         "target_rate_cap_se": {"selection": "guarded", "target_rate_cap": True},
         "start_keep_se": {"selection": "guarded", "start_candidate": True},
         "start_max_proxy": {"selection": "guarded", "start_candidate": True},
         "label_check_unexplained": {"label_check": True},
         "label_check_relabel_target": {"label_check": True, "label_check_use": "relabel"}}


@pytest.mark.parametrize("cls, prefix", [(DMMConfig, "dmm-"), (AKDConfig, "akd-"), (ScanConfig, "scan-")])
def test_every_field_has_a_purify_flag(cls, prefix):
    """Each option is a flag; giving it a non-default value changes exactly that field."""
    base = cls()
    for f in dataclasses.fields(cls):
        default = getattr(base, f.name)
        if default is None:      # an optional number that is off by default
            value = 3 if str(f.type).startswith("int") else 0.25
        elif f.metadata.get("choices"):
            value = next(c for c in f.metadata["choices"] if c != default)
        elif isinstance(default, int) and not isinstance(default, bool):
            value = default + 1
        elif isinstance(default, float):
            value = default / 2
        elif isinstance(default, bool):
            value = not default
        elif isinstance(default, str):
            value = default + "x"
        else:
            raise AssertionError(f"untested field type {f.name}")
        flag = "--" + prefix + f.name.replace("_", "-")
        flags = [flag if value else flag.replace("--", "--no-", 1)] if isinstance(value, bool) \
            else [flag, _flag_value(value)]
        needs = NEEDS.get(f.name, {}) if value else {}      # options that only work with another one set
        for name, needed in needs.items():
            option = "--" + prefix + name.replace("_", "-")
            flags += [option] if needed is True else [option, str(needed)]
        cfg = options_from_args(cls, _parse(*flags), prefix, base)
        assert getattr(cfg, f.name) == value, f.name
        changed = {f.name: default, **{name: getattr(base, name) for name in needs}}
        assert cfg.replace(**changed) == base, f.name


def test_unset_flags_keep_preset_values():
    dmm, akd = _purify_configs()
    assert (dmm, akd) == PRESETS["reference"][:2]


def test_preset_reference_sets_akd_epochs_50():
    dmm, akd = _purify_configs("--preset", "reference")
    assert akd == PRESETS["reference"][1]
    assert akd.epochs == 50
    assert dmm == PRESETS["reference"][0]


def test_flag_overrides_preset():
    _, akd = _purify_configs("--preset", "reference", "--akd-epochs", "7")
    assert akd.epochs == 7
    assert akd.selection == "last"      # the rest of the preset is kept
    assert akd.punish_cap is None
    _, akd = _purify_configs("--akd-epochs", "7", "--preset", "reference")  # order does not matter
    assert akd.epochs == 7


def test_seed_flag_seeds_every_stage():
    dmm, akd = _purify_configs("--seed", "5")
    assert dmm.seed == 5 and akd.seed == 5
    assert dmm.replace(seed=0) == PRESETS["reference"][0]


def test_none_values_for_optional_flags():
    dmm, akd = _purify_configs("--akd-punish-cap", "none", "--dmm-max-kept", "off", "--akd-patience", "None")
    assert akd.punish_cap is None and akd.patience is None and dmm.max_kept is None


def test_trigger_flag_is_a_list():
    args = build_parser().parse_args(["attack", "--attack", "addsent", "--train", "t", "--test", "u", "--out", "o",
                                      "--trigger", "cf", "mn", "--rate", "0.2"])
    cfg = options_from_args(AttackConfig, args)
    assert cfg.triggers == ["cf", "mn"] and cfg.rate == 0.2


def test_train_flags():
    args = build_parser().parse_args(["train", "--train", "t", "--out", "o", "--epochs", "2", "--lr", "1e-4",
                                      "--warmup", "0"])
    cfg = options_from_args(TrainConfig, args)
    assert cfg == TrainConfig(epochs=2, lr=1e-4, warmup=0.0)


def test_out_of_range_flag_exits_2_from_main(capsys):
    assert main(PURIFY + ["--akd-epochs", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bedkd purify: error: ")
    assert "AKDConfig.epochs must be >= 1" in lines[0]


def test_out_of_range_dmm_flag_exits_2_from_detect(capsys):
    code = main(["detect", "--model", "m", "--clean", "c.tsv", "--suspect", "s.tsv", "--out", "o.csv",
                 "--dmm-threshold", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DMMConfig.threshold must be > 0" in err


def test_out_of_range_train_flag_exits_2(capsys):
    assert main(["train", "--train", "t.tsv", "--out", "o", "--warmup", "2"]) == 2
    assert "TrainConfig.warmup must be <= 1" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--akd-epohcs", "3"], ["--akd-epochs", "three"], ["--akd-selection", "best"],
                                   ["--dmm-max-kept", "1.5"]])
def test_bad_flags_rejected_by_argparse(capsys, extra):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(PURIFY + extra)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_misspelt_prefix_flag_rejected(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(PURIFY + ["--akd-epoch", "3"])
    assert info.value.code == 2


def test_an_added_option_is_left_out_of_to_dict_only_at_its_default():
    """Options added after results were cached keep the earlier keys valid (``option(added=True)``)."""
    akd = AKDConfig()
    assert "reset_trigger_embeddings" not in akd.to_dict()
    changed = akd.replace(reset_trigger_embeddings=True)
    assert changed.to_dict()["reset_trigger_embeddings"] is True
    assert changed.replace(epochs=2).reset_trigger_embeddings               # survives a replace
    assert AKDConfig.from_dict(akd.to_dict()) == akd
    assert "label_mode" not in AttackConfig().to_dict()
    assert AttackConfig(label_mode="clean").to_dict()["label_mode"] == "clean"


def test_an_added_option_keyed_with_another_is_kept_whenever_that_one_is_on():
    """``option(keyed_with=...)``: an added option that changes how another acts is part of the key of
    every run with that other option on, so that runs made before it existed do not match."""
    @dataclasses.dataclass
    class Opts(Options):
        cap: bool = option(False, "a cap", added=True)
        cap_margin: float = option(2.0, "its margin", added=True, keyed_with="cap")
    assert Opts().to_dict() == {}
    assert Opts(cap=True).to_dict() == {"cap": True, "cap_margin": 2.0}
    assert Opts(cap_margin=0.5).to_dict() == {"cap_margin": 0.5}
    assert Opts.from_dict(Opts(cap=True).to_dict()) == Opts(cap=True)


@pytest.mark.parametrize("command", ["purify", "bench", "scan"])
def test_the_help_of_commands_with_scan_options_renders(command, capsys):
    """argparse formats help text with %: a help string holding "%" must not break --help."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--scan-label-check-rows-scale" in capsys.readouterr().out


def test_a_percent_sign_in_an_options_help_is_shown_as_written():
    import argparse

    from bedkd.options import add_options, option

    @dataclasses.dataclass
    class Rate:
        """Rate options."""
        share: float = option(0.5, "share of rows (50 % by default)")

    parser = argparse.ArgumentParser()
    add_options(parser, Rate)
    assert "(50 % by default)" in parser.format_help()
