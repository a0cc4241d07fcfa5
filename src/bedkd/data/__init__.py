"""Reading, checking and sampling labelled text."""
from .checks import check_labels, check_rows, require_all_classes
from .io import read_labeled, read_row_indices, write_tsv
from .records import LabeledTexts
from .sampling import per_class_split, random_limit

__all__ = ["LabeledTexts", "read_labeled", "read_row_indices", "write_tsv", "check_labels", "check_rows",
           "require_all_classes", "per_class_split", "random_limit"]
