"""The import page: upload a deals or spend CSV, see a dry run's preview, confirm.

The upload is kept between the dry run and the confirmation as a file in
``VAR_DIR/imports/`` named by a random token, which the session maps to the upload's
options; confirming imports that very file with those options and deletes it, so a
second confirmation (a reload, a double click) finds nothing to import.
"""

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from api.views import deals_csv_response
from imports import services
from imports.forms import UploadForm

SESSION_KEY = "imports"
#: Rows shown in the preview table; every failed row is listed below it whatever this is.
PREVIEW_ROWS = 500


def _upload_dir():
    path = Path(settings.VAR_DIR) / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _require_importer(request):
    if not services.may_import(request.user):
        raise PermissionDenied(_("Only managers and admins import and export deals."))


def _pending(request, token):
    """The stored upload named by ``token`` in this session, or None."""
    if not token or not isinstance(token, str):
        return None
    upload = request.session.get(SESSION_KEY, {}).get(token)
    if upload is None or not Path(upload["path"]).is_file():
        return None
    return upload


def _forget(request, token):
    uploads = request.session.get(SESSION_KEY, {})
    upload = uploads.pop(token, None)
    request.session[SESSION_KEY] = uploads
    if upload is not None:
        Path(upload["path"]).unlink(missing_ok=True)


def _context(result, upload):
    report = services.result_dict(result, name=upload["name"])
    columns = services.PREVIEW_COLUMNS[upload["kind"]]
    rows = [
        {
            "line": row["line"],
            "outcome": row["outcome"],
            "cells": [(row["cells"] or {}).get(c, "") for c in columns],
        }
        for row in report["rows"][:PREVIEW_ROWS]
    ]
    return {
        "report": report,
        "upload": upload,
        "kind_label": services.KINDS[upload["kind"]],
        "columns": columns,
        "rows": rows,
        "rows_hidden": max(0, len(report["rows"]) - PREVIEW_ROWS),
    }


@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    _require_importer(request)
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            token = secrets.token_urlsafe(16)
            path = _upload_dir() / f"{token}.csv"
            with open(path, "wb") as out:
                for chunk in form.cleaned_data["file"].chunks():
                    out.write(chunk)
            upload = {
                "path": str(path),
                "name": Path(form.cleaned_data["file"].name).name,
                "kind": form.cleaned_data["kind"],
                "create_missing": form.cleaned_data["create_missing"],
                "valid_only": form.cleaned_data["valid_only"],
            }
            uploads = request.session.get(SESSION_KEY, {})
            uploads[token] = upload
            request.session[SESSION_KEY] = uploads
            result = services.run_import(
                upload["kind"],
                path,
                user=request.user,
                create_missing=upload["create_missing"],
                valid_only=upload["valid_only"],
                dry_run=True,
            )
            context = _context(result, upload)
            context["token"] = token
            return render(request, "imports/preview.html", context)
    else:
        form = UploadForm()
    return render(request, "imports/upload.html", {"form": form})


@login_required
@require_POST
def confirm(request):
    _require_importer(request)
    token = request.POST.get("token")
    upload = _pending(request, token)
    if upload is None:
        messages.error(
            request, _("That upload is no longer waiting (already imported or discarded).")
        )
        return redirect("imports:upload")
    if "discard" in request.POST:
        _forget(request, token)
        messages.info(request, _("The upload was discarded; nothing was imported."))
        return redirect("imports:upload")
    # The dry run of an all-or-nothing file with bad rows offers to import the valid
    # rows only: the one option that may change at confirmation.
    valid_only = upload["valid_only"] or "valid_only" in request.POST
    upload = {**upload, "valid_only": valid_only}
    result = services.run_import(
        upload["kind"],
        upload["path"],
        user=request.user,
        create_missing=upload["create_missing"],
        valid_only=valid_only,
    )
    _forget(request, token)
    status = 200 if result.written else 422
    return render(request, "imports/result.html", _context(result, upload), status=status)


@login_required
@require_GET
def export(request):
    """The deals the user may see, as a CSV in the import format."""
    _require_importer(request)
    return deals_csv_response(request.user)
