"""Clutch's entry point for mitmproxy: `mitmdump -s addons/clutch.py` or `mitmweb -s addons/clutch.py`.

mitmproxy runs this file as a script with its folder first on sys.path. The modules here are
imported as the package `addons` from the checkout root instead, so that none of their names can
shadow another module, and so that this file (named like the project) never imports itself.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.dirname(_here)
while _here in sys.path:
    sys.path.remove(_here)
if _root not in sys.path:
    sys.path.insert(0, _root)

from addons.accounting.metrics import Metrics  # noqa: E402
from addons.browser_gate import BrowserGate  # noqa: E402
from addons.budget import Budget  # noqa: E402
from addons.certs import Certs  # noqa: E402
from addons.classify import Classify  # noqa: E402
from addons.compress import Compress  # noqa: E402
from addons.credentials import Credentials  # noqa: E402
from addons.drain import Drain  # noqa: E402
from addons.endpoints import Endpoints  # noqa: E402
from addons.engine import Engine  # noqa: E402
from addons.flow_keys import FlowKeys  # noqa: E402
from addons.identify import Identify  # noqa: E402
from addons.journal import Journal  # noqa: E402
from addons.models.rankings_book import RankingsBook  # noqa: E402
from addons.option_check import OptionCheck  # noqa: E402
from addons.reclaim import Reclaim  # noqa: E402
from addons.resilience import Resilience  # noqa: E402
from addons.resolve import Resolve  # noqa: E402
from addons.route import Route  # noqa: E402
from addons.rulebook import Rulebook  # noqa: E402
from addons.scope import Scope  # noqa: E402
from addons.shutdown import Shutdown  # noqa: E402
from addons.sockets import Sockets  # noqa: E402
from addons.usage import Usage  # noqa: E402


def make_addons() -> list:
    """Clutch's addons in hook order: local answers, then classification, compression, routing, and the engine."""
    certs, rulebook, resolve = Certs(), Rulebook(), Resolve()
    resilience = Resilience(rulebook)
    journal = Journal()
    usage, metrics = Usage(resilience), Metrics()
    usage.on_rows(metrics.observe_rows)
    rankings = RankingsBook(lambda: usage.store)  # the model scan's ranking, for the m / f tiers and cascades
    budget = Budget(rulebook, usage, resilience, rankings)
    drain = Drain()
    engine = Engine(resolve, rulebook, resilience, rankings, drain)
    shutdown = Shutdown(drain, engine, resilience, usage)
    credentials = Credentials(rulebook, usage)
    credentials.on_users(budget.book.configure_users)  # a team gateway's users' daily budgets
    return [
        shutdown,  # first: its `done` drains the requests in flight before any other addon's `done`
        certs,
        rulebook,
        resilience,
        Scope(rulebook),
        BrowserGate(rulebook),  # before anything reads the request: web pages and foreign Hosts are refused
        credentials,  # a team gateway's tokens: before Identify, which adds the user, and removes the password
        Identify(credentials),
        Endpoints(rulebook, certs, resilience, journal, usage, metrics, budget, rankings, shutdown, credentials),
        Classify(rulebook),
        Sockets(),  # Codex's Responses WebSocket; before routing copies a turn's headers
        Compress(rulebook),  # before routing: routes, cascades and translation all see the compressed body
        Route(rulebook, rankings),
        budget,  # after Route: a provider's budget needs the provider the request goes to
        engine,
        FlowKeys(engine),  # after the Engine, which copies the keys it sends before they are masked
        usage,  # after the Engine, whose response hook writes the attempts it records
        journal,  # after Usage, whose totals it shows
        resolve,  # after the Engine: only flows mitmproxy itself forwards
        drain,  # a request has ended when every addon's response or error hook has run
        Reclaim(),  # after Compress, whose `load` builds the tokenizer that Reclaim.load freezes
        OptionCheck(),  # last: its `load` runs when every option above exists
    ]


addons = make_addons()
