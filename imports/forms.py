from django import forms
from django.utils.translation import gettext_lazy as _

from imports.services import KINDS

#: A 100,000-row deals file is about 25 MB; beyond this an import belongs to the command.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


class UploadForm(forms.Form):
    kind = forms.ChoiceField(
        label=_("What the file holds"),
        choices=list(KINDS.items()),
        widget=forms.RadioSelect,
        initial="deals",
    )
    file = forms.FileField(
        label=_("CSV file"),
        help_text=_("UTF-8, comma- or semicolon-separated, with a header row."),
    )
    create_missing = forms.BooleanField(
        label=_("Create what is missing"),
        required=False,
        help_text=_(
            "Create unknown channels and lost reasons (and, for an admin, owners) instead "
            "of reporting their rows as errors. Unknown companies are always created."
        ),
    )
    valid_only = forms.BooleanField(
        label=_("Import the valid rows only"),
        required=False,
        help_text=_(
            "By default a file is all or nothing: one bad row and nothing is imported. "
            "Tick this to import the good rows and skip the bad ones."
        ),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(limit)d MB; split it, or use the import command.")
                % {"limit": MAX_UPLOAD_BYTES // (1024 * 1024)}
            )
        return upload
