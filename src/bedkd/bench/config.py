"""What a benchmark run covers and at which scale."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..options import Options, option

CLEAN = "clean"     # the no-attack row: the clean model, defended like a victim


@dataclass
class BenchConfig(Options):
    """Benchmark matrix and scale"""
    datasets: list[str] = option(["sst2", "olid", "agnews"],
                                 "datasets of the data pack, or user datasets: folders NAME/clean/ of the data "
                                 "directory with train.tsv, dev.tsv and test.tsv")
    attacks: list[str] = option(["badnets", "addsent", "synbkd", "stylebkd", "ep", "sos"],
                                f"attacks; '{CLEAN}' adds the no-attack row (always added unless --no-clean-row)")
    defenses: list[str] = option(["none", "bedkd"], "defenses ('none' = the victim as is)")
    clean_row: bool = option(True, "add the no-attack row: what each defense does to a clean model")
    train_limit: int | None = option(None, "victim training rows drawn from the training split (scale control)",
                                     low=10)
    eval_limit: int | None = option(None, "clean test rows drawn for evaluation; the triggered test set is "
                                          "built from them (scale control)", low=10)
    preset: str = option("reference", "BeDKD preset the --dmm-*/--akd-*/--scan-* flags of 'bedkd' start from "
                                      "(bedkd-reference, bedkd-guarded, bedkd-fast: fixed presets, no flags)",
                         choices=("reference", "guarded", "fast"))
    seed: int = option(0, "seed of sampling, attacks, training and defenses", low=0)
    suspect_data: str = option("poisoned", "the suspicious training data the defenses get: the victim's poisoned "
                                           "training rows, or the same rows before poisoning ('clean': an EP edit "
                                           "trained on the attacker's own rows, or a model from a hub whose training "
                                           "data is clean or unknown; data filters, which retrain on it, do not run)",
                               choices=("poisoned", "clean"), added=True)
    trace_epochs: bool = option(False, "a diagnostic: BeDKD measures the model of every AKD epoch (and the start), "
                                       "as it would be returned, on the test rows and records it in the cell's "
                                       "details (never read by its epoch rule; benchmarks/guard_margin.py "
                                       "--replay gives other rules' test numbers from it). Its cells get keys of their own; the time it "
                                       "takes is left out of defense_seconds (trace_seconds)", added=True)
    floor_seeds: list[int] = option([], "seeds of further clean models (the bench's clean model of each seed, "
                                        "trained into the workdir when missing): each attack row also reports the "
                                        "lowest and highest floor over them and its own, on its own triggered rows, "
                                        "and whether the bar holds with every one", added=True)

    def check(self):
        for name, values in (("datasets", self.datasets), ("attacks", self.attacks), ("defenses", self.defenses)):
            if not values:
                raise ConfigError(f"BenchConfig.{name} must not be empty")
            if len(set(values)) != len(values):
                raise ConfigError(f"BenchConfig.{name} lists a name twice: {values}")
        # a dataset name may also be a folder of the data directory: run_bench's check_matrix checks it
        for what, values, known in (("attack", self.attacks, attack_names()),
                                    ("defense", self.defenses, defense_names())):
            for value in values:
                if value not in known:
                    raise ConfigError(f"unknown {what} '{value}'; choose from {', '.join(known)}")
        if len(set(self.floor_seeds)) != len(self.floor_seeds):
            raise ConfigError(f"BenchConfig.floor_seeds lists a seed twice: {self.floor_seeds}")
        for seed in self.floor_seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ConfigError(f"BenchConfig.floor_seeds must hold seeds >= 0, got {seed!r}")


# The names a run may list, checked on construction: a misspelt name fails before any work.
def attack_names() -> list[str]:
    from ..attacks import ATTACKS
    return [CLEAN, *ATTACKS]


def defense_names() -> list[str]:
    from .defenses import defense_names as names
    return names()
