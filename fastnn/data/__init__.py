"""Data files shipped with fastnn (see :mod:`fastnn.datasets` for their sources and licences)."""
