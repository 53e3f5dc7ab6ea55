"""CSV exports of report tables, safe to open in a spreadsheet.

A text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return would be
read as a formula (OWASP "CSV injection"): it is prefixed with ``'``. Numbers are written
as numbers, a negative change included.
"""

import csv
from decimal import Decimal

from django.http import StreamingHttpResponse
from django.utils.text import slugify

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell):
    if cell is None:
        return ""
    if isinstance(cell, (int, float, Decimal)) and not isinstance(cell, bool):
        return cell
    text = str(cell)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


class _Echo:
    def write(self, value):
        return value


def csv_response(filename, header, rows, meta=()):
    """A streamed CSV: ``meta`` lines (label, value) first, then the table."""
    writer = csv.writer(_Echo())

    def lines():
        yield "\ufeff"  # spreadsheets read UTF-8 (Polish letters) only with a BOM
        for line in meta:
            yield writer.writerow([neutralise(c) for c in line])
        if meta:
            yield writer.writerow([])
        yield writer.writerow([neutralise(c) for c in header])
        for row in rows:
            yield writer.writerow([neutralise(c) for c in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{slugify(filename)}.csv"'
    return response
