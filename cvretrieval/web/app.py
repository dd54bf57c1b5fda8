"""The Streamlit script of ``cvret serve``: ``streamlit run app.py -- --bundle B [--report DIR]``.

Kept to the page setup and navigation; the pages live in ``search_page.py`` and
``report_page.py`` (files, so each has its own URL and AppTest can switch to it),
the widgets in :mod:`cvretrieval.web.page`, the logic in :mod:`cvretrieval.web.core`.
"""

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="cvretrieval", page_icon=":material/image_search:", layout="wide")
page = st.navigation(
    [
        st.Page(HERE / "search_page.py", title="Search", icon=":material/image_search:",
                default=True),
        st.Page(HERE / "report_page.py", title="Evaluation report", icon=":material/analytics:"),
    ]
)
page.run()
