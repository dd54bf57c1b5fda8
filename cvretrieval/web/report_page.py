"""Streamlit page: the saved evaluation report (see :func:`cvretrieval.web.page.report_page`)."""

from cvretrieval.web.page import current_settings, report_page

report_page(current_settings())
