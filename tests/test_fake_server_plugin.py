"""The fake server's Trio shell as users meet it first: exceptions and the pytest plugin."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
import trio

from trio_realtime.testing import open_fake_server

pytest_plugins = ["pytester"]


class AppError(Exception):
    pass


async def test_an_exception_in_the_block_comes_out_bare() -> None:
    with trio.fail_after(5), pytest.raises(AppError) as info:
        async with open_fake_server():
            raise AppError("from the test body")
    assert type(info.value) is AppError
    assert str(info.value) == "from the test body"


USES_FIXTURE = """
import pytest
import trio

async def test_async_uses_fixture(realtime_server):
    assert realtime_server.url

def test_sync_uses_fixture(realtime_server):
    assert realtime_server.url

def test_untouched():
    assert True
"""


def test_plugin_without_trio_mode_says_so(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(USES_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        ["*The realtime_server fixture cannot run: it is used by a test that is not a Trio test*"]
    )
    result.stdout.fnmatch_lines(["*trio_mode = true*"])


def test_plugin_without_pytest_trio_says_so(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(USES_FIXTURE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:trio")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*pytest-trio is not active*pip install pytest-trio*"])


MANY_USES = """
async def test_first(realtime_server):
    pass

def test_second(realtime_server):
    pass

async def test_third(realtime_server_beta):
    pass

async def test_fourth(realtime_server):
    pass

def test_on_the_fly(request):
    request.getfixturevalue("realtime_server")

def test_on_the_fly_again(request):
    request.getfixturevalue("realtime_server")
"""


@pytest.mark.parametrize("trio_plugin", ["on", "off"])
def test_every_test_using_the_fixture_gets_the_hint(
    pytester: pytest.Pytester, trio_plugin: str
) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(MANY_USES)
    options = ["-p", "no:cacheprovider", "--junitxml=report.xml"]
    if trio_plugin == "off":
        options += ["-p", "no:trio"]
    result = pytester.runpytest_subprocess(*options)
    result.assert_outcomes(errors=4, failed=2)
    cases = ElementTree.parse(pytester.path / "report.xml").getroot().iter("testcase")
    messages = {
        case.get("name"): [problem.get("message", "") for problem in case] for case in cases
    }
    assert len(messages) == 6
    for name, problems in messages.items():
        assert len(problems) == 1, (name, problems)
        assert "fixture cannot run" in problems[0], (name, problems)
        assert "trio_mode = true" in problems[0]
    assert "_finalizers" not in result.stdout.str()
