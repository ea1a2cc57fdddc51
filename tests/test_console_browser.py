"""The operator console in a real browser: Debian's headless chromium driven by Playwright.

Against a real ``wxhelper serve`` on loopback (the stand-in LLM, a real Redis, a token): sign in,
see the four namespaces, send a message through the API with plain httpx and watch it appear
live, open its prompt, see the fairness chart, add and delete a custom category, read the health.
Screenshots go to the test's temporary directory; with ``WXHELPER_CONSOLE_SCREENSHOTS=docs/images``
they are also written there (how the ones in the docs were made).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from test_server import AUTH, TOKEN, Served, _send, _send_on_fresh_connections
from wxhelper.fake_llm import FakeLLM

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = "13812345678"
MASKED = "138****5678"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLM, redis_url: str) -> Iterator[Served]:
    store = f"{redis_url}?prefix=browser-{uuid.uuid4().hex[:6]}:"  # a namespace of its own in the shared Redis
    served = Served(tmp_path_factory.mktemp("console"), llm,
                    extra_env={"WXHELPER_API_TOKEN": TOKEN, "WXHELPER_STORE": store})
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test.sh does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser: Browser, server: Served) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    pg = context.new_page()
    pg.set_default_timeout(15000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # The browser logs each 401 (the wrong token, signing out) as a failed resource: expected; anything else is not.
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
    yield pg
    context.close()
    assert not errors, errors  # no script error, no CSP violation, no failed request on any view


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def snap(page: Page, shots: Path, name: str) -> Path:
    path = shots / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    keep = os.environ.get("WXHELPER_CONSOLE_SCREENSHOTS")
    if keep:
        target = ROOT / keep if not os.path.isabs(keep) else Path(keep)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    assert path.stat().st_size > 5000
    return path


def test_sign_in_and_see_the_four_namespaces(page: Page, server: Served, shots: Path) -> None:
    page.goto(server.base + "/admin")
    expect(page.locator("#view-login")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    page.fill("#token", "not-the-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("refused")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#view-namespaces")).to_be_visible()
    rows = page.locator("#ns-table tbody tr")
    expect(rows).to_have_count(4)
    for name in ("聊天", "car_client", "qzzp", "lvyou"):
        row = page.locator(f'#ns-table tbody tr[data-ns="{name}"]')
        expect(row).to_contain_text("loaded")
        expect(row).to_contain_text("passages")
        expect(row).to_contain_text("indexed")
    expect(page.locator('#ns-table tr[data-ns="car_client"]')).to_contain_text("wxhelper-car-client")
    expect(page.locator("#session-info")).to_contain_text("store redis")
    # The token is kept for the tab (sessionStorage), not in a cookie or in the page's address.
    assert page.evaluate("sessionStorage.getItem('wxhelper.console.token')") == TOKEN
    assert TOKEN not in page.url and not page.context.cookies()
    snap(page, shots, "namespaces")


def test_reindex_shows_progress(page: Page, server: Served) -> None:
    page.goto(server.base + "/admin#namespaces")
    row = page.locator('#ns-table tr[data-ns="qzzp"]')
    page.check("#ns-force")
    row.locator("button").click()
    expect(row).to_contain_text(re.compile(r"done: \d+ passages, \d+ added"), timeout=60000)
    assert row.locator("progress").evaluate("p => p.value === p.max")


def test_a_message_sent_through_the_api_appears_live_and_its_prompt_opens(page: Page, server: Served,
                                                                         shots: Path) -> None:
    page.goto(server.base + "/admin#live")
    expect(page.locator("#live-state")).to_have_text("live")
    mid = f"browser-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        # Earlier traffic, so the prompt has a chat turn, a board post and a friend-circle post in it.
        _send(client, user_id="bob", group_id="车友群", namespace="car_client",
              content="出一台2018款思域，7万公里，无事故，电话13900001111")
        _send(client, user_id="carol", namespace="car_client", channel="friend_circle",
              content="朋友圈：收一台十万以内的SUV，电话13700002222")
        _send(client, user_id="alice", group_id="车友群", namespace="car_client", message_id=mid,
              content=f"想卖一辆2019年的卡罗拉，6万公里，电话{PHONE}。过户要带什么？")
    row = page.locator(f'#live-table tr[data-message-id="{mid}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("车友群")
    expect(row).to_contain_text("car_client")
    expect(row).to_contain_text(MASKED)
    expect(row).to_contain_text("namespace")  # recorded in the board too (it has a phone number)
    expect(row).to_contain_text(re.compile(r"assembly [\d.]+ · retrieval [\d.]+ · LLM [\d.]+"))
    assert PHONE not in page.content()
    snap(page, shots, "live")
    page.select_option("#live-ns", "car_client")
    page.fill("#live-filter", "车友")
    expect(row).to_be_visible()
    page.fill("#live-filter", "no-such-source")
    expect(row).to_have_count(0)
    expect(page.locator("#live-empty")).to_have_text("No message matches the filter.")
    page.fill("#live-filter", "")
    page.select_option("#live-ns", "")
    expect(page.locator(f'#live-table tr[data-message-id="{mid}"]')).to_be_visible()
    row = page.locator(f'#live-table tr[data-message-id="{mid}"]')

    row.click()
    expect(page.locator("#view-inspect")).to_be_visible()
    expect(page.locator("#inspect-meta")).to_contain_text("car_client")
    expect(page.locator("#inspect-meta")).to_contain_text("system.j2 from plugin")
    prompt = page.locator("#inspect-prompt pre")
    expect(prompt.first).to_contain_text("二手车")  # the plugin's system template
    expect(prompt.last).to_contain_text(f"alice：想卖一辆2019年的卡罗拉，6万公里，电话{MASKED}")
    expect(page.locator("#inspect-passages tbody tr").first).to_contain_text(".md")
    for kind, user in (("chat", "bob"), ("namespace", "bob"), ("friend_circle", "carol")):
        section = page.locator(f'[data-section="{kind}"]')
        expect(section).to_contain_text("characters")
        expect(section.locator("tbody")).to_contain_text(user)
    expect(page.locator('[data-section="chat"] tbody')).to_contain_text("wxhelper-bot")  # the bot's reply to bob
    expect(page.locator("#inspect-reply")).to_contain_text("FAKE-LLM")
    assert PHONE not in page.content()
    snap(page, shots, "inspector")
    page.click("#inspect-template summary")
    expect(page.locator("#inspect-template pre")).to_contain_text("{{")  # the template itself, before rendering
    page.click("#to-fair-chat")  # the same chat's fair selection now: bob, the bot's reply, alice and its reply
    expect(page.locator("#fair-source")).to_have_value("车友群")
    expect(page.locator("#fair-chart svg[data-metric=records] rect.cur")).to_have_count(3)
    page.go_back()
    expect(page.locator("#inspect-meta")).to_contain_text("car_client")
    page.locator("#inspect-passages").scroll_into_view_if_needed()
    page.evaluate("document.querySelector('#inspect-passages').scrollIntoView()")
    snap(page, shots, "inspector-sections")


def test_user_text_is_shown_as_text_never_as_html(page: Page, server: Served) -> None:
    page.goto(server.base + "/admin#live")
    expect(page.locator("#live-state")).to_have_text("live")
    mid = f"xss-{uuid.uuid4().hex[:10]}"
    evil = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        _send(client, user_id='<b id="bold">mallory</b>', group_id="<i>群</i>", message_id=mid, content=evil)
    row = page.locator(f'#live-table tr[data-message-id="{mid}"]')
    expect(row).to_contain_text("<img src=x")
    expect(row).to_contain_text('<b id="bold">mallory</b>')
    row.click()
    expect(page.locator("#inspect-meta")).to_contain_text("<script>")
    expect(page.locator("#inspect-prompt pre").last).to_contain_text("<img src=x")
    assert page.locator("main img, main script, #bold").count() == 0
    assert page.title() != "pwned"


def test_fairness_chart_beside_the_seed_algorithm(page: Page, server: Served, shots: Path) -> None:
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        for i, user in enumerate(("小王", "小李", "小张")):  # three quiet sellers post first…
            _send(client, user_id=user, group_id="车友群", namespace="car_client",
                  content=f"收一台五万左右的代步车，电话1371234567{i}")
        for i in range(10):  # …then a loud one floods the board with long posts (more than its character budget)
            _send(client, user_id="大卖家", group_id=f"车行{i}", namespace="car_client",
                  content=f"第{i}台：2020款凯美瑞，" + "车况精品一手车无事故" * 150 + f"，电话1391234{5600 + i}")
    page.goto(server.base + "/admin#fairness")
    page.select_option("#fair-ns", "car_client")
    page.select_option("#fair-kind", "namespace")  # the board (the form keeps the chat the inspector linked to)
    page.click("#fair-form button[type=submit]")
    chart = page.locator("#fair-chart svg[data-metric=chars]")
    expect(chart).to_be_visible()
    expect(page.locator("#fair-summary")).to_contain_text("max_min takes")
    for user in ("大卖家", "小王", "小李", "小张"):
        expect(chart.locator(f'rect.cur[data-user="{user}"]')).to_have_count(1)
        expect(chart.locator(f'rect.cmp[data-user="{user}"]')).to_have_count(1)
    # max-min keeps every quiet user; the seed's algorithm applies the character budget newest first and
    # stops at the loud user's first post that does not fit, so the quiet users' older posts are lost.
    value = lambda cls, user: int(chart.locator(f'rect.{cls}[data-user="{user}"]').get_attribute("data-value"))  # noqa: E731
    for user in ("小王", "小李", "小张"):
        assert value("cur", user) > 0 and value("cmp", user) == 0
    assert 0 < value("cur", "大卖家") < value("avail", "大卖家")
    expect(page.locator("#fair-summary")).to_contain_text("seed takes")
    expect(page.locator("#fair-table tbody tr")).to_have_count(6)  # and alice and bob, from the live test
    snap(page, shots, "fairness")


def test_add_then_delete_a_custom_category(page: Page, server: Served, shots: Path) -> None:
    page.goto(server.base + "/admin#categories")
    expect(page.locator("#preset-list li")).to_have_count(4)
    page.fill("#cat-name", "fangchan")
    page.fill("#cat-title", "房产")
    page.click("#cat-form button[type=submit]")
    row = page.locator('#cat-table tr[data-name="fangchan"]')
    expect(row).to_contain_text("房产")
    expect(page.locator("#cat-msg")).to_contain_text("Added")
    page.fill("#bind-source", "房东群")
    page.select_option("#bind-ns", "fangchan")
    page.click("#bind-form button[type=submit]")
    expect(page.locator("#bind-table")).to_contain_text("房东群")
    snap(page, shots, "categories")

    dialogs: list[str] = []

    def answer(dialog) -> None:  # type: ignore[no-untyped-def]
        dialogs.append(dialog.message)
        dialog.dismiss() if len(dialogs) == 1 else dialog.accept()

    page.on("dialog", answer)
    row.locator("button").click()  # dismissed: nothing happens
    expect(row).to_be_visible()
    row.locator("button").click()  # confirmed
    expect(page.locator("#cat-msg")).to_contain_text("Deleted")
    expect(page.locator('#cat-table tr[data-name="fangchan"]')).to_have_count(0)
    page.remove_listener("dialog", answer)
    assert len(dialogs) == 2 and "histories" in dialogs[0]
    # The binding to the deleted category stays (routing ignores it) and says so; unbinding it asks first.
    binding = page.locator('#bind-table tr[data-source="房东群"]')
    expect(binding).to_contain_text("deleted: ignored by routing")
    page.on("dialog", lambda dialog: dialog.accept())
    binding.locator("button").click()
    expect(page.locator('#bind-table tr[data-source="房东群"]')).to_have_count(0)
    with httpx.Client(base_url=server.base, headers=AUTH, timeout=30) as client:
        names = [c["name"] for c in client.get("/admin/api/categories").json()["custom"]]
    assert "fangchan" not in names


def test_health(page: Page, server: Served, shots: Path) -> None:
    page.goto(server.base + "/admin#health")
    for check in ("store", "chroma", "llm", "inbox", "spool"):
        expect(page.locator(f'[data-check="{check}"] .pill')).to_have_text("ok")
    expect(page.locator('[data-check="store"]')).to_contain_text("redis")
    expect(page.locator('[data-check="inbox"] .big')).to_have_text("0")
    expect(page.locator('[data-check="spool"] .big')).to_have_text("0")
    snap(page, shots, "health")


def test_sign_out_forgets_the_token(page: Page, server: Served) -> None:
    page.goto(server.base + "/admin#namespaces")
    page.click("#logout")
    expect(page.locator("#view-login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('wxhelper.console.token')") is None
    page.reload()
    expect(page.locator("#view-login")).to_be_visible()


def test_every_workers_messages_appear_live(browser: Browser, tmp_path: Path, llm: FakeLLM, redis_url: str) -> None:
    """Two workers over Redis: the page's live stream (served by one of them) shows every message."""
    store = f"{redis_url}?prefix=browser2-{uuid.uuid4().hex[:6]}:"
    served = Served(tmp_path, llm, workers=2, extra_env={"WXHELPER_API_TOKEN": TOKEN, "WXHELPER_STORE": store})
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        pg = context.new_page()
        pg.goto(served.base + "/admin#live")
        pg.fill("#token", TOKEN)
        pg.click("#login-form button[type=submit]")
        expect(pg.locator("#session-info")).to_contain_text("2 worker(s)")
        expect(pg.locator("#live-state")).to_have_text("live")
        sent = [f"w2-{i}-{uuid.uuid4().hex[:6]}" for i in range(10)]
        _send_on_fresh_connections(served, [dict(user_id=f"u{i}", group_id="两个进程", namespace="qzzp",
                                                 content="试用期多久？", message_id=mid) for i, mid in enumerate(sent)])
        for mid in sent:
            expect(pg.locator(f'#live-table tr[data-message-id="{mid}"]')).to_be_visible()
        workers = set(pg.locator("#live-table tbody tr td:last-child").all_inner_texts())
        print("workers that handled the messages:", sorted(workers))
        pg.goto(served.base + "/admin#namespaces")
        expect(pg.locator('#ns-table tr[data-ns="qzzp"] button')).to_be_disabled()  # embedded Chroma, 2 workers
    finally:
        context.close()
        served.stop()
