"""The import page in a real browser: the options of the upload form follow the kind
of file chosen (static/js/imports.js)."""

from django.urls import reverse


def test_create_what_is_missing_shows_only_for_files_that_can_create(page, sign_in, manager):
    sign_in(manager)
    page.goto(reverse("imports:upload"))
    create = page.locator("input[name=create_missing]")
    valid_only = page.locator("input[name=valid_only]")
    assert page.locator("input[name=kind]:checked").get_attribute("value") == "deals"
    assert create.is_visible() and create.is_enabled()
    page.get_by_label("Activities", exact=True).check()
    assert not create.is_visible() and create.is_disabled()
    assert valid_only.is_visible()  # applies to every kind
    page.get_by_label("Marketing spend", exact=True).check()
    assert create.is_visible() and create.is_enabled()
