"""
Fixtures shared by the test modules.
"""

import pytest
from twisted.logger import globalLogPublisher


@pytest.fixture
def events():
    """
    The log events emitted during the test (see L{tests.logs.named}).
    """
    captured = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)
