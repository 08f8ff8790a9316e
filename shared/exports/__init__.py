"""Export runs from start to finish; `service.py` says which module holds which step."""
from shared.exports.error_report import ERRORS_PAGE_BYTES
from shared.exports.files import chunk_blob, errors_prefix
from shared.exports.ports import Refused
from shared.exports.service import ExportService

__all__ = ["ERRORS_PAGE_BYTES", "ExportService", "Refused", "chunk_blob", "errors_prefix"]
