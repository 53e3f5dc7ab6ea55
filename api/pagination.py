from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """``?page=N``; ``?page_size=`` up to MAX_PAGE_SIZE (one page of deals is one
    query however large, so the cap bounds the response, not the query count)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
