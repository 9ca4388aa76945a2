"""
The stats server of every router (uWSGI's C{--R-stats}).
"""
