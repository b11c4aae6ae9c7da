"""The per-NPC cost governor: what conversations cost, and the persona budgets that cap it.

prices  sans-I/O: USD per 1M tokens by model (built in, overridable by a YAML file), and the
        cost of one response's `Usage`
ledger  sans-I/O: running spend per conversation, per NPC (and player) per UTC day, for the
        daemon, and which `Budget` limit is used up
store   the day totals in ``spend.sqlite3``, so a restart does not reset a day budget
"""

from npcd.cost.ledger import Exceeded, Ledger, Scope, utc_today
from npcd.cost.prices import DEFAULT_PRICES, Prices, PriceTable, cost_usd, load_prices
from npcd.cost.store import SPEND_DB_NAME, SpendStore

__all__ = [
    "DEFAULT_PRICES",
    "SPEND_DB_NAME",
    "Exceeded",
    "Ledger",
    "PriceTable",
    "Prices",
    "Scope",
    "SpendStore",
    "cost_usd",
    "load_prices",
    "utc_today",
]
