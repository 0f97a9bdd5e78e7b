"""Real test-runner outputs (tests/compression/fixtures/runners/, how each was made is in its README):
every failing test's name, assertion message and first frame in the project's own files survive a cut
of the long log, in both modes, and the log still shrinks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from addons.compression.policy import Mode, Settings, compress_request
from addons.compression.transforms import MARKER_PREFIX, strip_terminal_noise
from addons.wire.dialects import Dialect

FIXTURES = Path(__file__).parent / "fixtures" / "runners"

# runner -> (the command the agent ran, the lines that must survive: per failing test its name, its
# assertion message and its first frame in the project's own files), as the terminal shows them.
FAILURES: dict[str, tuple[str, list[str]]] = {
    "pytest": ("python -m pytest -v", [
        "_____________________________ test_total_with_tax ______________________________",
        "E       assert 2398 == 2399", "test_shop.py:12: AssertionError",
        "______________ test_parse_negative_quantity_is_rejected_politely _______________",
        "E           ValueError: quantity must not be negative: -3", "test_shop.py:16: ", "shop.py:11: ValueError",
        "_________________________ test_discount_never_negative _________________________",
        "E       AssertionError: discounted total went negative: -4", "test_shop.py:21: AssertionError"]),
    "unittest": ("python -m unittest -v test_shop_unittest", [
        "ERROR: test_parse_negative_quantity_is_rejected_politely "
        "(test_shop_unittest.ShopTests.test_parse_negative_quantity_is_rejected_politely)",
        '  File "/tmp/c18b-runners/py/test_shop_unittest.py", line 20, in '
        "test_parse_negative_quantity_is_rejected_politely",
        '  File "/tmp/c18b-runners/py/shop.py", line 11, in parse_quantity',
        "ValueError: quantity must not be negative: -3",
        "FAIL: test_discount_never_negative (test_shop_unittest.ShopTests.test_discount_never_negative)",
        '  File "/tmp/c18b-runners/py/test_shop_unittest.py", line 24, in test_discount_never_negative',
        "AssertionError: -4 not greater than or equal to 0 : discounted total went negative: -4",
        "FAIL: test_total_with_tax (test_shop_unittest.ShopTests.test_total_with_tax)",
        '  File "/tmp/c18b-runners/py/test_shop_unittest.py", line 17, in test_total_with_tax',
        "AssertionError: 2398 != 2399"]),
    "jest": ("npx jest --verbose", [
        "  ● shop › adds tax to the total", "    Expected: 2399", "    Received: 2398",
        "      at Object.toBe (shop.test.js:11:36)",
        "  ● shop › rejects a negative quantity politely", '    RangeError: quantity must not be negative: "-3"',
        "      at parseQuantity (../shop.js:8:11)", "      at Object.parseQuantity (shop.test.js:15:12)",
        "  ● shop › never discounts below zero", "    Expected: >= 0", "    Received:    -4",
        "      at Object.toBeGreaterThanOrEqual (shop.test.js:20:19)"]),
    "vitest": ("npx vitest run --reporter=verbose", [
        " FAIL  shop.test.js > shop > adds tax to the total",
        "AssertionError: expected 2398 to be 2399 // Object.is equality", " ❯ shop.test.js:12:36",
        " FAIL  shop.test.js > shop > rejects a negative quantity politely",
        'RangeError: quantity must not be negative: "-3"', " ❯ parseQuantity ../shop.js:8:11",
        " ❯ shop.test.js:16:25",
        " FAIL  shop.test.js > shop > never discounts below zero",
        "AssertionError: expected -4 to be greater than or equal to 0", " ❯ shop.test.js:21:19"]),
    "mocha": ("npx mocha mocha/shop.spec.js", [
        "  1) shop", "       adds tax to the total:",
        "      AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:", "2398 !== 2399",
        "      at Context.<anonymous> (mocha/shop.spec.js:12:12)",
        "  2) shop", "       rejects a negative quantity politely:",
        '     RangeError: quantity must not be negative: "-3"', "      at parseQuantity (shop.js:8:11)",
        "  3) shop", "       never discounts below zero:",
        "      AssertionError [ERR_ASSERTION]: discounted total went negative: -4",
        "      at Context.<anonymous> (mocha/shop.spec.js:21:12)"]),
    "go": ("go test -v ./...", [
        "--- FAIL: TestTotalWithTax (0.00s)", "    shop_test.go:21: PriceWithTax(1999, 20) = 2398, want 2399",
        "--- FAIL: TestDiscountNeverNegative (0.00s)", "    shop_test.go:28: discounted total went negative: -4",
        "--- FAIL: TestParseNegativeQuantityIsRejectedPolitely (0.00s)",
        'panic: quantity must not be negative: "-3" [recovered]', "\t/tmp/c18b-runners/go/shop.go:16 +0x99"]),
    "cargo": ("cargo test", [
        "---- tests::parse_negative_quantity_is_rejected_politely stdout ----",
        "thread 'tests::parse_negative_quantity_is_rejected_politely' (16857) panicked at src/lib.rs:6:25:",
        "quantity must be a whole number: ParseIntError { kind: InvalidDigit }",
        "---- tests::discount_never_negative stdout ----",
        "thread 'tests::discount_never_negative' (16856) panicked at src/lib.rs:38:9:",
        "discounted total went negative: -4",
        "---- tests::total_with_tax stdout ----",
        "thread 'tests::total_with_tax' (17018) panicked at src/lib.rs:27:9:",
        "assertion `left == right` failed", "  left: 2398", " right: 2399"]),
    "exunit": ("mix test --trace", [
        "  1) test total with tax (ShopTest)", "     Assertion with == failed", "     left:  2398",
        "     right: 2399", "       test/shop_test.exs:11: (test)",
        "  2) test parse negative quantity is rejected politely (ShopTest)",
        '     ** (ArgumentError) quantity must not be negative: "-3"',
        "       (shop 0.1.0) lib/shop.ex:7: Shop.parse_quantity/1",
        "  3) test discount never negative (ShopTest)", "     discounted total went negative: -4",
        "       test/shop_test.exs:20: (test)"]),
    "rspec": ("rspec --format documentation", [
        "  1) Shop adds tax to the total", "       expected: 2399", "            got: 2398",
        "     # ./spec/shop_spec.rb:11:in `block (2 levels) in <top (required)>'",
        "  2) Shop rejects a negative quantity politely", "     ArgumentError:",
        '       quantity must not be negative: "-3"', "     # ./lib/shop.rb:8:in `parse_quantity'",
        "  3) Shop never discounts below zero", "       discounted total went negative: -4",
        "     # ./spec/shop_spec.rb:20:in `block (2 levels) in <top (required)>'"]),
    "phpunit": ("phpunit --testdox tests", [
        " ✘ Total with tax", "   │ Failed asserting that 2398 is identical to 2399.",
        "   │ /tmp/c18b-runners/php/tests/ShopTest.php:26",
        " ✘ Parse negative quantity is rejected politely",
        '   │ InvalidArgumentException: quantity must not be negative: "-3"',
        "   │ /tmp/c18b-runners/php/src/Shop.php:15",
        " ✘ Discount never negative", "   │ discounted total went negative: -4",
        "   │ Failed asserting that -4 is equal to 0 or is greater than 0.",
        "   │ /tmp/c18b-runners/php/tests/ShopTest.php:37"]),
    "maven": ("mvn -B test", [
        "[ERROR] shop.ShopTest.discountNeverNegative -- Time elapsed: 0.018 s <<< FAILURE!",
        "org.opentest4j.AssertionFailedError: discounted total went negative: -4 ==> expected: <true> but was: <false>",
        "\tat shop.ShopTest.discountNeverNegative(ShopTest.java:23)",
        "[ERROR] shop.ShopTest.parseNegativeQuantityIsRejectedPolitely -- Time elapsed: 0.002 s <<< ERROR!",
        'java.lang.IllegalArgumentException: quantity must not be negative: "-3"',
        "\tat shop.Shop.parseQuantity(Shop.java:11)",
        "[ERROR] shop.ShopTest.totalWithTax -- Time elapsed: 0.005 s <<< FAILURE!",
        "org.opentest4j.AssertionFailedError: expected: <2399> but was: <2398>",
        "\tat shop.ShopTest.totalWithTax(ShopTest.java:12)"]),
}



def tool_result_body(command: str, output: str) -> dict:
    """A Claude Code request whose last tool result is the runner's output."""
    return {"model": "claude-sonnet-4-6", "max_tokens": 100,
            "messages": [{"role": "user", "content": "run the tests"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                                            "input": {"command": command}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                       "content": output}]}]}


@pytest.mark.parametrize("mode", [Mode.CACHE_SAFE, Mode.MAX])
@pytest.mark.parametrize("runner", sorted(FAILURES))
def test_every_failing_test_keeps_its_name_message_and_first_project_frame(runner, mode):
    command, must_survive = FAILURES[runner]
    raw = (FIXTURES / f"{runner}.txt").read_text()
    shown = strip_terminal_noise(raw).split("\n")
    assert [line for line in must_survive if line not in shown] == []  # the expectations are the fixture's own lines
    body = tool_result_body(command, raw)
    result = compress_request(Dialect.ANTHROPIC, body, Settings(mode=mode)).body["messages"][2]["content"][0]["content"]
    assert MARKER_PREFIX in result and len(result) < 0.6 * len(raw)  # the long-log cut ran and the log shrank
    kept = result.split("\n")
    assert [line for line in must_survive if line not in kept] == []


# An ExUnit run of 52 tests with 12 failures (fixtures/runners/README.md): the case, where a
# cut once dropped 9 of 12 failure headers and kept the `12 tests, 12 failures` summary.
EXUNIT_12 = FIXTURES / "exunit-12-failures.txt"


@pytest.mark.parametrize("mode", [Mode.CACHE_SAFE, Mode.MAX])
def test_an_exunit_run_with_twelve_failures_keeps_every_failure(mode):
    raw = EXUNIT_12.read_text()
    lines = raw.split("\n")
    headers = [line for line in lines if re.match(r" *\d+\) test .* \(Shop12Test\)$", line)]
    assert len(headers) == 12
    values = [line for line in lines if line.lstrip().startswith(("left:", "right:", "code:", "** ("))]
    frames = [line for line in lines if line.startswith("       ") and (".ex:" in line or ".exs:" in line)]
    assert len(values) > 24 and len(frames) >= 12
    body = tool_result_body("mix test", raw)
    result = compress_request(Dialect.ANTHROPIC, body, Settings(mode=mode)).body["messages"][2]["content"][0]["content"]
    kept = result.split("\n")
    assert [line for line in headers + values + frames + ["52 tests, 12 failures"] if line not in kept] == []
    assert len(result) <= len(raw)  # a log of failures has little to cut: never longer for the markers
