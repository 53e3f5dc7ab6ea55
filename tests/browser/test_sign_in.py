def test_a_rep_signs_in_through_the_login_form(page, sign_in, rep, live_server):
    sign_in(rep)

    assert page.url == f"{live_server.url}/"
    assert rep.get_full_name() in page.locator("header").inner_text()
