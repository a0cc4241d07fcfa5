"""The backdoor scan: a verdict, the target label and a trigger search (this project's additions)."""
from .dmm_evidence import LabelEvidence, label_evidence
from .scan import ScanConfig, ScanResult, Verdict, decide, scan
from .trigger_search import SearchSettings, Trigger, TriggerSearch, search_triggers

__all__ = ["ScanConfig", "ScanResult", "Verdict", "decide", "scan", "LabelEvidence", "label_evidence",
           "SearchSettings", "Trigger", "TriggerSearch", "search_triggers"]
