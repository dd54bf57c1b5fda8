"""Streamlit page: search the bundles (see :func:`cvretrieval.web.page.search_page`)."""

from cvretrieval.web.page import current_settings, search_page

search_page(current_settings())
