"""Synthetic XDM data with a known generating process (BG/NBD + Gamma-Gamma + Dirichlet).

Why: the ML models (churn, CLV, affinity) need data whose truth we know, so tests can check
that fitted parameters come back and that scores carry signal. The story per buyer:

* purchase rate ``lambda ~ Gamma(r, rate=alpha)`` per day, dropout ``p ~ Beta(a, b)``;
  the first purchase is at the join time, repeat purchases are Poisson(lambda) while alive,
  and after each *repeat* purchase the buyer drops out with probability ``p`` (BG/NBD exactly);
* spend ``nu ~ Gamma(q, rate=gamma)``; each order value ``z ~ Gamma(p, rate=nu)`` dollars,
  rounded to cents (Gamma-Gamma exactly, up to the rounding);
* category preferences ``~ Dirichlet``; order lines and product views follow them;
* browsing and e-mail engagement rise with ``lambda`` and fall to a residual level after dropout,
  which is the (noisy) signal a churn model can learn.

Everything is vectorized numpy per chunk of customers. Each chunk draws from its own
``SeedSequence(seed, spawn_key=(1, chunk))`` stream, so the output depends only on the
arguments; identifiers are hashes of (seed, customer, sequence number).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from profile_enrichment.errors import UserError
from profile_enrichment.xdm_events import (
    CATEGORY_TYPE,
    EVENT_SCHEMA,
    EVENT_TYPES,
    IDENTITY_ITEM_TYPE,
    PROFILE_SCHEMA,
    EventFileWriter,
    encode_jsonl,
    format_timestamps_ms,
    sha256_email,
    write_table,
)

__all__ = ["GenerateSummary", "PopulationParams", "generate"]

CURRENCY = "USD"
SITE = "https://shop.example.com"
MS_PER_DAY = 86_400_000
SECONDS = 1.0 / 86_400.0  # one second in days

# event type codes (index into EVENT_TYPES)
PV, PDV, CA, CO, PUR, EOPEN, ECLICK = range(7)
assert EVENT_TYPES[PUR] == "commerce.purchases"

# identity-map patterns
ANON, AUTH, AUTH_EMAIL, EMAIL_ONLY = range(4)
NS_ECID, NS_CRM, NS_EMAIL = range(3)
NAMESPACES = ("ECID", "CRMID", "Email_LC_SHA256")
_PATTERN_KEYS = np.array(
    [[NS_ECID, -1, -1], [NS_CRM, NS_ECID, -1], [NS_CRM, NS_EMAIL, NS_ECID], [NS_CRM, NS_EMAIL, -1]]
)
_PATTERN_LEN = np.array([1, 2, 3, 2])

# person kinds
KIND_ANON, KIND_NONBUYER, KIND_BUYER = range(3)
KIND_NAMES = ("anonymous_visitor", "registered_nonbuyer", "buyer")

# fixed pages: home, search, account, cart, checkout, confirmation; then categories, products
_FIXED_PAGES = (
    ("home", "/"),
    ("search", "/search"),
    ("account", "/account"),
    ("cart", "/cart"),
    ("checkout", "/checkout"),
    ("checkout|confirmation", "/checkout/confirmation"),
)
PAGE_CHECKOUT, PAGE_CONFIRM, N_FIXED_PAGES = 4, 5, len(_FIXED_PAGES)

_CATEGORIES = (
    ("apparel", "Apparel", ("T-Shirt", "Hoodie", "Jacket", "Jeans")),
    ("footwear", "Footwear", ("Sneaker", "Boot", "Sandal", "Runner")),
    ("outdoor", "Outdoor", ("Tent", "Backpack", "Lantern", "Sleeping Bag")),
    ("electronics", "Electronics", ("Headphones", "Speaker", "Charger", "Smartwatch")),
    ("home", "Home & Kitchen", ("Mug", "Pan", "Blanket", "Lamp")),
    ("beauty", "Beauty", ("Serum", "Lip Balm", "Shampoo", "Face Mask")),
    ("books", "Books", ("Novel", "Cookbook", "Travel Guide", "Notebook")),
    ("toys", "Toys & Games", ("Puzzle", "Board Game", "Building Set", "Plush")),
    ("grocery", "Grocery", ("Coffee", "Tea", "Chocolate", "Olive Oil")),
    ("sports", "Sports", ("Yoga Mat", "Dumbbell", "Water Bottle", "Jump Rope")),
    ("pets", "Pet Supplies", ("Dog Toy", "Cat Bed", "Leash", "Treats")),
    ("garden", "Garden", ("Planter", "Seeds", "Pruner", "Hose")),
)
_ADJECTIVES = (
    "Classic", "Everyday", "Pro", "Eco", "Urban", "Trail", "Cozy", "Bold",
    "Essential", "Premium", "Compact", "Vintage", "Lite", "Signature", "Studio",
)  # fmt: skip
_FIRST = (
    "anna", "ben", "carla", "david", "eva", "felix", "grace", "hugo", "ines", "jack",
    "kim", "leo", "maria", "noah", "olga", "paul", "rosa", "sam", "tina", "umar",
)  # fmt: skip
_LAST = (
    "smith", "garcia", "chen", "mueller", "rossi", "kowalski", "tanaka", "silva",
    "dubois", "jensen", "novak", "okafor", "patel", "larsen", "moreau", "ivanova",
)  # fmt: skip
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example")


@dataclass(frozen=True)
class PopulationParams:
    """Population parameters of the generating process (time unit: days, money: USD)."""

    # BG/NBD: lambda ~ Gamma(r, rate=alpha) per day; p ~ Beta(a, b)
    r: float = 0.8
    alpha: float = 40.0
    a: float = 1.0
    b: float = 6.0
    # Gamma-Gamma: nu ~ Gamma(q, rate=gamma); order value ~ Gamma(p, rate=nu) dollars
    gg_p: float = 6.0
    gg_q: float = 4.0
    gg_gamma: float = 15.0
    # population mix
    anonymous_fraction: float = 0.25  # never log in, never buy (ECID only)
    nonbuyer_fraction: float = 0.10  # registered (CRMID), browse and read e-mail, never buy
    pre_login_fraction: float = 0.40  # of registered people: browse anonymously before joining
    pre_login_max_days: float = 30.0
    join_span_fraction: float = 0.80  # join times ~ Uniform(0, join_span_fraction * days)
    second_device_fraction: float = 0.30  # people with a second ECID
    # catalog and preferences
    n_categories: int = 10
    n_skus: int = 200
    dirichlet_concentration: float = 2.0  # sum of the Dirichlet alpha vector
    mean_extra_lines: float = 0.5  # lines per order = 1 + min(Poisson(mean_extra_lines), 4)
    mean_extra_quantity: float = 0.3  # quantity per line = 1 + Poisson(mean_extra_quantity)
    # browsing (sessions per day) and e-mail engagement
    base_session_rate: float = 0.02
    intent_session_factor: float = 5.0  # + factor * lambda sessions/day for buyers
    anonymous_session_rate: float = 0.03
    pre_login_session_rate: float = 0.15
    residual_activity: float = 0.06  # activity after dropout, relative to alive
    activity_noise_shape: float = 2.0  # Gamma(shape, 1/shape) multiplier per person
    nonbuyer_lapse_mean_days: float = 120.0
    anonymous_lapse_mean_days: float = 45.0
    email_send_rate: float = 0.3  # e-mails per day to registered people
    email_open_base: float = 0.06
    email_open_intent: float = 0.06  # + per unit of lambda / E[lambda] (capped at 4)
    email_open_dead: float = 0.015
    email_click_alive: float = 0.25
    email_click_dead: float = 0.08
    hashed_email_on_web_fraction: float = 0.30  # logged-in web events that also carry the hash

    def with_activity(self, scale: float) -> PopulationParams:
        """The same population with ``scale`` times the activity per person.

        Purchase rates (alpha / scale), browsing-session rates and the e-mail send rate are all
        multiplied by ``scale``, so the mix of behaviours stays the same while the events per
        person shrink or grow. The benchmark uses it to reach ~20 events per customer (1M
        customers ~ 20M events) instead of the demo's ~130; params.json records the result.
        """
        if not scale > 0:
            raise UserError(f"activity scale must be > 0, got {scale!r}")
        if scale == 1.0:
            return self
        return replace(
            self,
            alpha=self.alpha / scale,
            base_session_rate=self.base_session_rate * scale,
            anonymous_session_rate=self.anonymous_session_rate * scale,
            pre_login_session_rate=self.pre_login_session_rate * scale,
            email_send_rate=self.email_send_rate * scale,
        )

    def validate(self) -> None:
        """Raise :class:`UserError` for impossible settings."""
        positive = ("r", "alpha", "a", "b", "gg_p", "gg_q", "gg_gamma", "dirichlet_concentration")
        for name in positive:
            if not getattr(self, name) > 0:
                raise UserError(f"population parameter {name} must be > 0")
        if self.gg_q <= 1:
            raise UserError("gg_q must be > 1 so the mean order value is finite")
        if not 0 <= self.anonymous_fraction + self.nonbuyer_fraction < 1:
            raise UserError("anonymous_fraction + nonbuyer_fraction must be in [0, 1)")
        if not 2 <= self.n_categories <= len(_CATEGORIES):
            raise UserError(f"n_categories must be between 2 and {len(_CATEGORIES)}")
        if self.n_skus < self.n_categories:
            raise UserError("n_skus must be at least n_categories")


@dataclass
class GenerateSummary:
    """Counts of what :func:`generate` wrote (``seconds`` is wall-clock, never written to disk)."""

    customers: int
    known_customers: int
    events: int
    purchases: int
    files: int
    bytes: int
    seconds: float
    event_files: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------- small numerics


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays (wrapping arithmetic): a fast, well-mixed hash."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hash2(seed: int, salt: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of (seed, salt, a, b)."""
    h = _mix64(np.full(np.shape(a), np.uint64(seed) ^ np.uint64(salt), dtype=np.uint64))
    h = _mix64(h ^ np.asarray(a, dtype=np.uint64))
    h1 = _mix64(h ^ np.asarray(b, dtype=np.uint64))
    h2 = _mix64(h1 ^ np.uint64(0xD1B54A32D192ED03))
    return h1, h2


def _hex_ids(seed: int, salt: int, a: np.ndarray, b: np.ndarray, nbytes: int = 16) -> pa.Array:
    """Hex strings (2 * nbytes chars) from hashes of (seed, salt, a, b): ids without colons."""
    h1, h2 = _hash2(seed, salt, a, b)
    raw = np.ascontiguousarray(np.stack([h1, h2], axis=1).astype(">u8").view(np.uint8)[:, :nbytes])
    width = 2 * nbytes
    data = pa.py_buffer(raw.tobytes().hex().encode("ascii"))
    offsets = pa.py_buffer(np.arange(0, (raw.shape[0] + 1) * width, width, dtype=np.int32))
    return pa.StringArray.from_buffers(raw.shape[0], offsets, data)


def _ecids(seed: int, person: np.ndarray, device: np.ndarray) -> pa.Array:
    """38-digit decimal ECIDs (the shape Adobe's Experience Cloud ID has)."""
    h1, h2 = _hash2(seed, 0xEC1D, person, device)
    ten19 = np.uint64(10**19)
    hi = pc.utf8_lpad(pa.array(h1 % ten19).cast(pa.string()), 19, "0")
    lo = pc.utf8_lpad(pa.array(h2 % ten19).cast(pa.string()), 19, "0")
    # a leading digit of 0 is fine for an opaque id, but keep 38 significant-looking digits
    return pc.binary_join_element_wise(hi, lo, "")


def _group_layout(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For groups with ``counts`` members: (owner per member, rank within group, group starts)."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    owner = np.repeat(np.arange(counts.size), counts)
    rank = np.arange(owner.size, dtype=np.int64) - starts[owner]
    return owner, rank, starts


def _cumsum_within(values: np.ndarray, owner: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of ``values`` within contiguous groups."""
    total = np.cumsum(values)
    before = np.concatenate([[0.0], total])[starts]
    return total - before[owner]


def _pick(cum_weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF choice per row: ``cum_weights`` (m, k) rows, ``u`` (m,) -> index in [0, k)."""
    idx = (u[:, None] >= cum_weights).sum(axis=1)
    return np.minimum(idx, cum_weights.shape[1] - 1)


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class _Catalog:
    sku: list[str]
    name: list[str]
    category: np.ndarray  # category index per SKU
    base_price: np.ndarray
    category_ids: list[str]
    category_names: list[str]
    category_alpha: np.ndarray  # Dirichlet alpha vector
    sku_table: np.ndarray  # (K, M) SKU indices per category, padded with the last one
    sku_cum: np.ndarray  # (K, M) cumulative popularity within category
    page_names: pa.Array  # fixed pages, then one per category, then one per SKU
    page_urls: pa.Array

    def table(self) -> pa.Table:
        return pa.table(
            {
                "sku": pa.array(self.sku, pa.string()),
                "product_name": pa.array(self.name, pa.string()),
                "category_id": pa.array([self.category_ids[c] for c in self.category], pa.string()),
                "category_name": pa.array(
                    [self.category_names[c] for c in self.category], pa.string()
                ),
                "base_price": pa.array(self.base_price, pa.float64()),
                "currency_code": pa.array([CURRENCY] * len(self.sku), pa.string()),
            }
        )


def _build_catalog(seed: int, params: PopulationParams) -> _Catalog:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    k, n = params.n_categories, params.n_skus
    cats = _CATEGORIES[:k]
    category = np.arange(n) % k
    popularity = 1.0 / (np.arange(k) + 1.0) ** 0.7
    alpha = params.dirichlet_concentration * popularity / popularity.sum()
    base_price = np.round(np.exp(rng.normal(np.log(25.0), 0.6, n)), 2).clip(0.99, None)
    adjectives = rng.integers(0, len(_ADJECTIVES), n)
    nouns = rng.integers(0, 4, n)
    names = [
        f"{_ADJECTIVES[a]} {cats[c][2][b]}"
        for a, c, b in zip(adjectives, category, nouns, strict=True)
    ]
    sku = [f"SKU-{10001 + i}" for i in range(n)]
    m = int(np.bincount(category, minlength=k).max())
    sku_table = np.zeros((k, m), dtype=np.int64)
    sku_cum = np.ones((k, m))
    for c in range(k):
        members = np.flatnonzero(category == c)
        weights = 1.0 / (np.arange(members.size) + 1.0) ** 0.8
        sku_table[c, : members.size] = members
        sku_table[c, members.size :] = members[-1]
        sku_cum[c, : members.size] = np.cumsum(weights) / weights.sum()
    category_ids = [f"cat-{c[0]}" for c in cats]
    category_names = [c[1] for c in cats]
    page_names, page_urls = _page_strings(category_ids, category_names, sku, names)
    return _Catalog(
        sku=sku,
        name=names,
        category=category,
        base_price=base_price,
        category_ids=category_ids,
        category_names=category_names,
        category_alpha=alpha,
        sku_table=sku_table,
        sku_cum=sku_cum,
        page_names=page_names,
        page_urls=page_urls,
    )


def _page_strings(
    category_ids: list[str], category_names: list[str], skus: list[str], names: list[str]
) -> tuple[pa.Array, pa.Array]:
    page_names = [p[0] for p in _FIXED_PAGES]
    page_urls = [SITE + p[1] for p in _FIXED_PAGES]
    for cid, cname in zip(category_ids, category_names, strict=True):
        page_names.append(f"category|{cname}")
        page_urls.append(f"{SITE}/c/{cid.removeprefix('cat-')}")
    for sku, name in zip(skus, names, strict=True):
        page_names.append(f"product|{name}")
        page_urls.append(f"{SITE}/p/{sku.lower()}")
    return pa.array(page_names, pa.string()), pa.array(page_urls, pa.string())


# --------------------------------------------------------------------------- one chunk


@dataclass
class _ChunkResult:
    events: pa.Table
    profiles: pa.Table
    truth: pa.Table
    purchases: int


def _simulate_chunk(
    chunk: int,
    first: int,
    n: int,
    *,
    seed: int,
    days: int,
    start_ms: int,
    params: PopulationParams,
    catalog: _Catalog,
) -> _ChunkResult:
    """Simulate customers ``first .. first + n - 1``; everything vectorized over people/events."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk)))
    P = params
    K = P.n_categories
    g = np.arange(first, first + n, dtype=np.int64)  # global customer index

    # ---- people
    u = rng.random(n)
    kind = np.where(
        u < P.anonymous_fraction,
        KIND_ANON,
        np.where(u < P.anonymous_fraction + P.nonbuyer_fraction, KIND_NONBUYER, KIND_BUYER),
    )
    registered = kind != KIND_ANON
    buyer = kind == KIND_BUYER
    join = rng.uniform(0.0, P.join_span_fraction * days, n)
    pre = registered & (rng.random(n) < P.pre_login_fraction)
    first_seen = np.where(
        pre, np.maximum(join - rng.uniform(1.0, P.pre_login_max_days, n), 0), join
    )
    pre &= first_seen < join
    n_dev = 1 + (rng.random(n) < P.second_device_fraction).astype(np.int64)
    noise = rng.gamma(P.activity_noise_shape, 1.0 / P.activity_noise_shape, n)
    email_noise = rng.gamma(3.0, 1.0 / 3.0, n)
    lam = rng.gamma(P.r, 1.0 / P.alpha, n)
    p_drop = rng.beta(P.a, P.b, n)
    nu = rng.gamma(P.gg_q, 1.0 / P.gg_gamma, n)
    pref = rng.dirichlet(catalog.category_alpha, n)
    pref_cum = np.cumsum(pref, axis=1)
    intent = np.where(buyer, np.minimum(lam / (P.r / P.alpha), 4.0), 0.0)

    # ---- BG/NBD purchases (buyers only)
    horizon = days - join
    k_repeat = rng.geometric(np.clip(p_drop, 1e-12, 1.0))  # repeat purchases until dropout
    n_poisson = np.where(buyer, rng.poisson(lam * horizon), 0)
    x = np.minimum(k_repeat, n_poisson)
    alive_bg = k_repeat > n_poisson
    r_owner, r_rank, _ = _group_layout(n_poisson)
    r_u = rng.random(r_owner.size) * horizon[r_owner]
    r_sorted = r_u[np.lexsort((r_u, r_owner))]  # owner order is unchanged (already grouped)
    keep = r_rank < x[r_owner]
    repeat_owner, repeat_t = r_owner[keep], join[r_owner[keep]] + r_sorted[keep]
    p_owner = np.concatenate([np.flatnonzero(buyer), repeat_owner])
    p_t = np.concatenate([join[buyer], repeat_t])
    order = np.lexsort((p_t, p_owner))
    p_owner, p_t = p_owner[order], p_t[order]
    n_purch = np.bincount(p_owner, minlength=n)
    last_purchase = np.full(n, np.nan)
    has_purchase = n_purch > 0
    last_purchase[has_purchase] = p_t[(np.cumsum(n_purch) - 1)[has_purchase]]  # time-sorted

    # activity ends: buyers at the BG/NBD dropout, others at an engagement lapse
    lapse = join + rng.exponential(
        np.where(kind == KIND_ANON, P.anonymous_lapse_mean_days, P.nonbuyer_lapse_mean_days)
    )
    alive_end = np.where(buyer, np.where(alive_bg, days, last_purchase), np.minimum(lapse, days))
    is_alive = np.where(buyer, alive_bg, lapse >= days)

    # ---- orders and lines
    n_orders = p_owner.size
    o_lines = 1 + np.minimum(rng.poisson(P.mean_extra_lines, n_orders), 4)
    o_value = rng.gamma(P.gg_p, 1.0 / nu[p_owner])
    o_cents = np.maximum(np.rint(o_value * 100).astype(np.int64), o_lines)
    l_order, _, o_line_start = _group_layout(o_lines)
    l_w = rng.exponential(1.0, l_order.size)
    l_w = l_w / np.bincount(l_order, weights=l_w, minlength=n_orders)[l_order]
    l_cents = 1 + np.floor(l_w * (o_cents - o_lines)[l_order]).astype(np.int64)
    short = o_cents - np.bincount(l_order, weights=l_cents, minlength=n_orders).astype(np.int64)
    l_cents[o_line_start] += short
    l_owner = p_owner[l_order]
    l_cat = _pick(pref_cum[l_owner], rng.random(l_order.size))
    l_sku = catalog.sku_table[l_cat, _pick(catalog.sku_cum[l_cat], rng.random(l_order.size))]
    l_qty = 1 + rng.poisson(P.mean_extra_quantity, l_order.size)
    l_price = l_cents / 100.0
    revenue = np.bincount(p_owner, weights=o_cents, minlength=n) / 100.0

    # ---- browsing sessions: pre-login (anonymous), alive, after dropout/lapse
    alive_rate = np.select(
        [buyer, kind == KIND_NONBUYER],
        [P.base_session_rate + P.intent_session_factor * lam, P.base_session_rate],
        P.anonymous_session_rate,
    )
    alive_rate = alive_rate * noise
    seg_owner = np.concatenate([g - first] * 3)
    seg_start = np.concatenate([first_seen, join, alive_end])
    seg_end = np.concatenate([np.where(pre, join, first_seen), alive_end, np.full(n, float(days))])
    seg_rate = np.concatenate(
        [P.pre_login_session_rate * noise, alive_rate, P.residual_activity * alive_rate]
    )
    seg_auth = np.concatenate([np.zeros(n, bool), registered, registered])
    seg_alive = np.concatenate([np.ones(n, bool), np.ones(n, bool), np.zeros(n, bool)])
    seg_len = np.maximum(seg_end - seg_start, 0.0)
    s_count = rng.poisson(seg_rate * seg_len)
    s_seg, _, _ = _group_layout(s_count)
    S = s_seg.size
    s_owner = seg_owner[s_seg]
    s_start = seg_start[s_seg] + rng.random(S) * seg_len[s_seg]
    s_auth = seg_auth[s_seg]
    s_hot = seg_alive[s_seg] & buyer[s_owner]
    s_dev = np.where(s_auth, (rng.random(S) * n_dev[s_owner]).astype(np.int64), 0)
    s_pv = 1 + rng.poisson(2.0, S)
    s_pdv = rng.poisson(np.where(s_hot, 0.5 + 0.6 * intent[s_owner], 0.4))
    s_ca = rng.binomial(s_pdv, np.where(s_hot, 0.15, 0.05))
    s_co = ((s_ca > 0) & s_auth & (rng.random(S) < 0.35)).astype(np.int64)
    b_sess, b_pos, b_start = _group_layout(s_pv + s_pdv + s_ca + s_co)
    c1 = s_pv[b_sess]
    c2 = c1 + s_pdv[b_sess]
    c3 = c2 + s_ca[b_sess]
    b_type = np.select([b_pos < c1, b_pos < c2, b_pos < c3], [PV, PDV, CA], CO)
    B = b_sess.size
    # one single-item line per product view / cart add, in creation order (CA lines contiguous)
    b_single = (b_type == PDV) | (b_type == CA)
    b_cat = _pick(pref_cum[s_owner[b_sess]], rng.random(B))
    b_sku = catalog.sku_table[b_cat, _pick(catalog.sku_cum[b_cat], rng.random(B))]
    single_sku = b_sku[b_single]
    b_line = np.full(B, -1, dtype=np.int64)
    b_line[b_single] = l_order.size + np.arange(single_sku.size)
    b_nline = b_single.astype(np.int64)
    co_idx = np.flatnonzero(b_type == CO)
    first_ca = b_start[b_sess[co_idx]] + c2[co_idx]
    b_line[co_idx] = b_line[first_ca]
    b_nline[co_idx] = s_ca[b_sess[co_idx]]
    b_page = np.full(B, -1, dtype=np.int64)
    pv_idx = np.flatnonzero(b_type == PV)
    pv_kind = _pick(
        np.array([[0.25, 0.35, 0.65, 1.0]]).repeat(pv_idx.size, 0), rng.random(pv_idx.size)
    )
    b_page[pv_idx] = np.select(
        [pv_kind == 0, pv_kind == 1, pv_kind == 2],
        [0, N_FIXED_PAGES + b_cat[pv_idx], N_FIXED_PAGES + K + b_sku[pv_idx]],
        1 + (rng.random(pv_idx.size) * 3).astype(np.int64),  # search, account, cart
    )
    b_page[b_single] = N_FIXED_PAGES + K + single_sku
    b_page[co_idx] = PAGE_CHECKOUT
    # interleave page and product views, then cart adds, then the checkout
    b_phase = np.select([b_type == CA, b_type == CO], [1, 2], 0)
    b_order = np.lexsort((rng.random(B), b_phase, b_sess))
    b_gap = rng.exponential(40.0 * SECONDS, B)
    b_off = _cumsum_within(b_gap, b_sess, b_start)
    b_t = np.empty(B)
    b_t[b_order] = s_start[b_sess] + b_off  # sorted slot i gets the i-th offset of its session

    # ---- purchase sessions: views of the lines (+ extras), a cart add per line, checkout, purchase
    q_pv = 1 + rng.poisson(1.0, n_orders)
    q_pdv = o_lines + rng.poisson(0.5, n_orders)
    q_sess, q_pos, q_start = _group_layout(q_pv + q_pdv + o_lines + 2)
    d1 = q_pv[q_sess]
    d2 = d1 + q_pdv[q_sess]
    d3 = d2 + o_lines[q_sess]
    d4 = d3 + 1
    q_type = np.select([q_pos < d1, q_pos < d2, q_pos < d3, q_pos < d4], [PV, PDV, CA, CO], PUR)
    Q = q_sess.size
    q_owner = p_owner[q_sess]
    q_line = np.full(Q, -1, dtype=np.int64)
    q_nline = np.zeros(Q, dtype=np.int64)
    q_page = np.full(Q, -1, dtype=np.int64)
    # product views: the first `lines` view the ordered SKUs, extras follow preferences
    q_pdv_idx = np.flatnonzero(q_type == PDV)
    k_in = q_pos[q_pdv_idx] - d1[q_pdv_idx]
    from_order = k_in < o_lines[q_sess[q_pdv_idx]]
    view_sku = np.empty(q_pdv_idx.size, dtype=np.int64)
    view_sku[from_order] = l_sku[o_line_start[q_sess[q_pdv_idx[from_order]]] + k_in[from_order]]
    extra = ~from_order
    e_cat = _pick(pref_cum[q_owner[q_pdv_idx[extra]]], rng.random(int(extra.sum())))
    view_sku[extra] = catalog.sku_table[
        e_cat, _pick(catalog.sku_cum[e_cat], rng.random(e_cat.size))
    ]
    q_line[q_pdv_idx] = l_order.size + single_sku.size + np.arange(q_pdv_idx.size)
    q_nline[q_pdv_idx] = 1
    q_page[q_pdv_idx] = N_FIXED_PAGES + K + view_sku
    q_ca_idx = np.flatnonzero(q_type == CA)
    q_line[q_ca_idx] = o_line_start[q_sess[q_ca_idx]] + (q_pos[q_ca_idx] - d2[q_ca_idx])
    q_nline[q_ca_idx] = 1
    q_page[q_ca_idx] = N_FIXED_PAGES + K + l_sku[q_line[q_ca_idx]]
    q_multi = np.flatnonzero((q_type == CO) | (q_type == PUR))
    q_line[q_multi] = o_line_start[q_sess[q_multi]]
    q_nline[q_multi] = o_lines[q_sess[q_multi]]
    q_page[q_multi] = np.where(q_type[q_multi] == CO, PAGE_CHECKOUT, PAGE_CONFIRM)
    q_pv_idx = np.flatnonzero(q_type == PV)
    q_page[q_pv_idx] = np.where(
        rng.random(q_pv_idx.size) < 0.5,
        0,
        N_FIXED_PAGES + _pick(pref_cum[q_owner[q_pv_idx]], rng.random(q_pv_idx.size)),
    )
    q_phase = np.select([q_type == CA, q_type == CO, q_type == PUR], [1, 2, 3], 0)
    q_order = np.lexsort((rng.random(Q), q_phase, q_sess))
    q_off = _cumsum_within(rng.exponential(40.0 * SECONDS, Q), q_sess, q_start)
    q_dur = q_off[q_start + (q_pv + q_pdv + o_lines + 2) - 1]
    q_t = np.empty(Q)
    q_t[q_order] = p_t[q_sess] - (q_dur[q_sess] - q_off)  # the purchase lands exactly at p_t
    q_dev = (rng.random(n_orders) * n_dev[p_owner]).astype(np.int64)[q_sess]

    # ---- e-mail opens and clicks (registered people)
    open_alive = (
        np.where(buyer, P.email_open_base + P.email_open_intent * intent, P.email_open_base)
        * email_noise
    )
    e_rate = np.concatenate([open_alive, P.email_open_dead * email_noise]) * P.email_send_rate
    e_start = np.concatenate([join, alive_end])
    e_len = np.maximum(np.concatenate([alive_end, np.full(n, float(days))]) - e_start, 0.0)
    e_count = np.where(np.concatenate([registered, registered]), rng.poisson(e_rate * e_len), 0)
    e_seg, _, _ = _group_layout(e_count)
    eo_owner = np.concatenate([g - first] * 2)[e_seg]
    eo_t = e_start[e_seg] + rng.random(e_seg.size) * e_len[e_seg]
    click_p = np.where(e_seg < n, P.email_click_alive, P.email_click_dead)
    clicked = rng.random(e_seg.size) < click_p
    ec_owner = eo_owner[clicked]
    ec_t = eo_t[clicked] + rng.exponential(300.0 * SECONDS, ec_owner.size)

    # ---- all events
    ev_owner = np.concatenate([s_owner[b_sess], q_owner, eo_owner, ec_owner])
    ev_t = np.concatenate([b_t, q_t, eo_t, ec_t])
    n_mail = eo_owner.size + ec_owner.size
    ev_type = np.concatenate(
        [b_type, q_type, np.full(eo_owner.size, EOPEN), np.full(ec_owner.size, ECLICK)]
    )
    ev_auth = np.concatenate([s_auth[b_sess], np.ones(Q, bool), np.ones(n_mail, bool)])
    ev_dev = np.concatenate([s_dev[b_sess], q_dev, np.zeros(n_mail, np.int64)])
    ev_line = np.concatenate([b_line, q_line, np.full(n_mail, -1)])
    ev_nline = np.concatenate([b_nline, q_nline, np.zeros(n_mail, np.int64)])
    ev_page = np.concatenate([b_page, q_page, np.full(n_mail, -1)])
    ev_order = np.concatenate(
        [np.full(B, -1), np.where(q_type == PUR, q_sess, -1), np.full(n_mail, -1)]
    )
    ev_ms = start_ms + np.floor(ev_t * MS_PER_DAY).astype(np.int64)
    inside = (ev_t >= 0) & (ev_ms < start_ms + days * MS_PER_DAY)
    srt = np.lexsort((ev_ms, ev_owner))
    srt = srt[inside[srt]]
    ev_owner, ev_ms, ev_type, ev_auth = ev_owner[srt], ev_ms[srt], ev_type[srt], ev_auth[srt]
    ev_dev, ev_line, ev_nline = ev_dev[srt], ev_line[srt], ev_nline[srt]
    ev_page, ev_order = ev_page[srt], ev_order[srt]
    E = ev_owner.size
    _, ev_seq, _ = _group_layout(np.bincount(ev_owner, minlength=n))
    pattern = np.where(
        ev_type >= EOPEN,
        EMAIL_ONLY,
        np.where(
            ~ev_auth,
            ANON,
            np.where(
                (ev_type == PUR)
                | (ev_type == CO)
                | (rng.random(E) < P.hashed_email_on_web_fraction),
                AUTH_EMAIL,
                AUTH,
            ),
        ),
    )

    # ---- identity strings per person
    ecid0 = _ecids(seed, g, np.zeros(n, np.int64))
    ecid1 = _ecids(seed, g, np.ones(n, np.int64))
    crm = pc.binary_join_element_wise(
        "CRM-", pc.utf8_lpad(pa.array(g).cast(pa.string()), 9, "0"), ""
    )
    crm = pc.if_else(pa.array(registered), crm, pa.scalar(None, pa.string()))
    emails = _raw_emails(rng, g, registered)
    sha = pa.array([None if e is None else sha256_email(e) for e in emails], pa.string())
    pool = pa.concat_arrays([ecid0, ecid1, crm, sha])

    events = _events_table(
        seed=seed,
        first=first,
        n=n,
        ev_owner=ev_owner,
        ev_seq=ev_seq,
        ev_ms=ev_ms,
        ev_type=ev_type,
        ev_dev=ev_dev,
        ev_line=ev_line,
        ev_nline=ev_nline,
        ev_page=ev_page,
        ev_order=ev_order,
        pattern=pattern,
        pool=pool,
        order_cents=o_cents,
        order_owner=p_owner,
        line_sku=np.concatenate([l_sku, single_sku, view_sku]),
        line_qty=np.concatenate([l_qty, np.ones(single_sku.size + view_sku.size, np.int64)]),
        line_price=np.concatenate(
            [l_price, catalog.base_price[single_sku], catalog.base_price[view_sku]]
        ),
        catalog=catalog,
    )

    # ---- profiles (registered people): CRMID primary, hashed e-mail, all ECIDs
    reg = np.flatnonzero(registered)
    profiles = _profiles_table(seed, g[reg], reg, n, n_dev[reg], pool)

    # ---- ground truth
    start_day = np.datetime64(start_ms // MS_PER_DAY, "D")

    def to_date(t: np.ndarray) -> np.ndarray:
        return start_day + np.floor(t).astype(np.int64)

    dropout_t = np.where(is_alive, np.nan, alive_end)
    truth = pa.table(
        {
            "customer_index": pa.array(g, pa.int64()),
            "segment": pa.array(KIND_NAMES, pa.string()).take(pa.array(kind)),
            "crm_id": crm,
            "ecid": ecid0,
            "ecid_secondary": pc.if_else(pa.array(n_dev > 1), ecid1, pa.scalar(None, pa.string())),
            "email": pa.array(emails, pa.string()),
            "email_sha256": sha,
            "first_seen_date": pa.array(to_date(first_seen), pa.date32()),
            "join_date": pa.array(to_date(join), pa.date32()),
            "is_buyer": pa.array(buyer),
            "purchase_rate_per_day": pa.array(np.where(buyer, lam, np.nan), from_pandas=True),
            "dropout_probability": pa.array(np.where(buyer, p_drop, np.nan), from_pandas=True),
            "spend_scale": pa.array(np.where(buyer, nu, np.nan), from_pandas=True),
            "dropout_date": pa.array(
                np.where(
                    np.isnan(dropout_t), np.datetime64("NaT"), to_date(np.nan_to_num(dropout_t))
                ),
                pa.date32(),
                from_pandas=True,
            ),
            "is_alive_at_end": pa.array(is_alive.astype(bool)),
            "n_purchases": pa.array(n_purch, pa.int64()),
            "total_revenue": pa.array(revenue, pa.float64()),
            "activity_multiplier": pa.array(noise, pa.float64()),
            "category_preferences": pa.array(
                [
                    json.dumps(
                        dict(zip(catalog.category_ids, np.round(row, 6).tolist(), strict=True))
                    )
                    for row in pref
                ],
                pa.string(),
            ),
        }
    )
    return _ChunkResult(events=events, profiles=profiles, truth=truth, purchases=int(n_orders))


def _raw_emails(
    rng: np.random.Generator, g: np.ndarray, registered: np.ndarray
) -> list[str | None]:
    """Raw (mixed-case) e-mails for registered people; only ground truth ever holds them."""
    n = g.size
    f = rng.integers(0, len(_FIRST), n)
    last = rng.integers(0, len(_LAST), n)
    dom = rng.integers(0, len(_DOMAINS), n)
    capital = rng.random(n) < 0.5
    out: list[str | None] = []
    for i in range(n):
        if not registered[i]:
            out.append(None)
            continue
        first, family = _FIRST[f[i]], _LAST[last[i]]
        if capital[i]:
            first, family = first.capitalize(), family.capitalize()
        out.append(f"{first}.{family}{g[i]}@{_DOMAINS[dom[i]]}")
    return out


def _identity_items(ids: pa.Array, states: pa.Array, primary: np.ndarray) -> pa.Array:
    items = pa.StructArray.from_arrays(
        [ids, states, pa.array(primary)], fields=list(IDENTITY_ITEM_TYPE)
    )
    return items


def _events_table(
    *,
    seed: int,
    first: int,
    n: int,
    ev_owner: np.ndarray,
    ev_seq: np.ndarray,
    ev_ms: np.ndarray,
    ev_type: np.ndarray,
    ev_dev: np.ndarray,
    ev_line: np.ndarray,
    ev_nline: np.ndarray,
    ev_page: np.ndarray,
    ev_order: np.ndarray,
    pattern: np.ndarray,
    pool: pa.Array,
    order_cents: np.ndarray,
    order_owner: np.ndarray,
    line_sku: np.ndarray,
    line_qty: np.ndarray,
    line_price: np.ndarray,
    catalog: _Catalog,
) -> pa.Table:
    """Assemble the nested Arrow columns of :data:`EVENT_SCHEMA` from flat numpy arrays."""
    E = ev_owner.size
    g_owner = ev_owner + first
    _id = _hex_ids(seed, 0xE7E27, g_owner, ev_seq)
    timestamp = format_timestamps_ms(ev_ms)
    event_type = pa.array(EVENT_TYPES, pa.string()).take(pa.array(ev_type))

    # identityMap: one map entry per namespace, each a one-item list
    n_keys = _PATTERN_LEN[pattern]
    m_ev, m_pos, _ = _group_layout(n_keys)
    ns = _PATTERN_KEYS[pattern[m_ev], m_pos]
    owner = ev_owner[m_ev]
    pool_idx = np.select(
        [ns == NS_ECID, ns == NS_CRM], [owner + n * ev_dev[m_ev], 2 * n + owner], 3 * n + owner
    )
    authenticated = (ns != NS_ECID) & (pattern[m_ev] != EMAIL_ONLY)
    states = pa.array(["ambiguous", "authenticated"], pa.string()).take(
        pa.array(authenticated.astype(np.int8))
    )
    primary = (ns == NS_CRM) | (pattern[m_ev] == ANON)
    items = _identity_items(pool.take(pa.array(pool_idx)), states, primary)
    item_lists = pa.ListArray.from_arrays(pa.array(np.arange(ns.size + 1, dtype=np.int32)), items)
    keys = pa.array(NAMESPACES, pa.string()).take(pa.array(ns))
    map_offsets = pa.array(np.concatenate([[0], np.cumsum(n_keys)]).astype(np.int32))
    identity_map = pa.MapArray.from_arrays(map_offsets, keys, item_lists)

    # commerce
    is_pur = ev_type == PUR
    order_idx = np.where(is_pur, ev_order, 0)
    _, order_rank, _ = _group_layout(np.bincount(order_owner, minlength=n))
    purchase_ids = pc.binary_join_element_wise(
        "PO-", _hex_ids(seed, 0x0D3E, order_owner + first, order_rank, 8), ""
    )
    order = pa.StructArray.from_arrays(
        [
            purchase_ids.take(pa.array(order_idx))
            if order_owner.size
            else pa.nulls(E, pa.string()),
            pa.array(order_cents[order_idx] / 100.0 if order_owner.size else np.zeros(E)),
            pa.repeat(pa.scalar(CURRENCY), E),
        ],
        names=["purchaseID", "priceTotal", "currencyCode"],
        mask=pa.array(~is_pur),
    )
    ones = pa.array(np.ones(E))

    def measure(code: int) -> pa.Array:
        return pa.StructArray.from_arrays([ones], names=["value"], mask=pa.array(ev_type != code))

    commerce = pa.StructArray.from_arrays(
        [order, measure(PUR), measure(PDV), measure(CA), measure(CO)],
        names=["order", "purchases", "productViews", "productListAdds", "checkouts"],
        mask=pa.array((ev_type == PV) | (ev_type >= EOPEN)),
    )

    # productListItems
    i_ev, i_pos, _ = _group_layout(ev_nline)
    li = ev_line[i_ev] + i_pos
    sku = line_sku[li]
    sku_arr = pa.array(sku)
    cat = catalog.category[sku]
    categories = pa.ListArray.from_arrays(
        pa.array(np.arange(li.size + 1, dtype=np.int32)),
        pa.StructArray.from_arrays(
            [
                pa.array(catalog.category_ids, pa.string()).take(pa.array(cat)),
                pa.array(catalog.category_names, pa.string()).take(pa.array(cat)),
            ],
            fields=list(CATEGORY_TYPE),
        ),
    )
    plist_items = pa.StructArray.from_arrays(
        [
            pa.array(catalog.sku, pa.string()).take(sku_arr),
            pa.array(catalog.name, pa.string()).take(sku_arr),
            pa.array(line_qty[li], pa.int64()),
            pa.array(line_price[li], pa.float64()),
            pa.repeat(pa.scalar(CURRENCY), li.size),
            categories,
        ],
        names=["SKU", "name", "quantity", "priceTotal", "currencyCode", "productCategories"],
    )
    plist = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(ev_nline)]).astype(np.int32)),
        plist_items,
        mask=pa.array(ev_nline == 0),
    )

    # web
    has_page = ev_page >= 0
    page = np.where(has_page, ev_page, 0)
    page_names, page_urls = catalog.page_names, catalog.page_urls
    page_views = pa.StructArray.from_arrays([ones], names=["value"], mask=pa.array(ev_type != PV))
    details = pa.StructArray.from_arrays(
        [page_names.take(pa.array(page)), page_urls.take(pa.array(page)), page_views],
        names=["name", "URL", "pageViews"],
        mask=pa.array(~has_page),
    )
    web = pa.StructArray.from_arrays([details], names=["webPageDetails"], mask=pa.array(~has_page))

    return pa.Table.from_arrays(
        [_id, timestamp, event_type, identity_map, commerce, plist, web], schema=EVENT_SCHEMA
    )


def _profiles_table(
    seed: int, g: np.ndarray, local: np.ndarray, n: int, n_dev: np.ndarray, pool: pa.Array
) -> pa.Table:
    """One profile per registered person: CRMID (primary), Email_LC_SHA256, 1-2 ECIDs."""
    m = g.size
    # entries per profile: CRMID, Email_LC_SHA256, ECID (list of n_dev items)
    keys = pa.array(
        np.tile(np.array(["CRMID", "Email_LC_SHA256", "ECID"], dtype=object), m), pa.string()
    )
    n_items = np.stack([np.ones(m, np.int64), np.ones(m, np.int64), n_dev], axis=1).ravel()
    it_entry, it_pos, _ = _group_layout(n_items)
    person = local[it_entry // 3]
    kind = it_entry % 3
    pool_idx = np.select(
        [kind == 0, kind == 1], [2 * n + person, 3 * n + person], person + n * it_pos
    )
    states = pa.array(["ambiguous", "authenticated"], pa.string()).take(
        pa.array((kind < 2).astype(np.int8))
    )
    items = _identity_items(pool.take(pa.array(pool_idx)), states, kind == 0)
    lists = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(n_items)]).astype(np.int32)), items
    )
    identity_map = pa.MapArray.from_arrays(
        pa.array(np.arange(0, 3 * m + 1, 3, dtype=np.int32)), keys, lists
    )
    _id = _hex_ids(seed, 0x9F0F1, g, np.zeros(m, np.int64))
    return pa.Table.from_arrays([_id, identity_map], schema=PROFILE_SCHEMA)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class _ChunkJob:
    chunk: int
    first: int
    size: int
    seed: int
    days: int
    start_ms: int
    fmt: str


@dataclass
class _ChunkOutput:
    events: pa.Table
    encoded: bytes | None  # JSON Lines body, encoded in the worker
    type_counts: np.ndarray
    truth: pa.Table
    profiles: pa.Table
    purchases: int


def _run_chunk(job: _ChunkJob, params: PopulationParams, catalog: _Catalog) -> _ChunkOutput:
    res = _simulate_chunk(
        job.chunk, job.first, job.size, seed=job.seed, days=job.days, start_ms=job.start_ms,
        params=params, catalog=catalog,
    )  # fmt: skip
    codes = pa.array(EVENT_TYPES, pa.string())
    counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    idx = pc.index_in(res.events.column("eventType"), value_set=codes).to_numpy()
    np.add.at(counts, idx, 1)
    encoded = encode_jsonl(res.events) if job.fmt == "jsonl" else None
    return _ChunkOutput(res.events, encoded, counts, res.truth, res.profiles, res.purchases)


def _run_jobs(
    jobs: list[_ChunkJob], params: PopulationParams, catalog: _Catalog, workers: int | None
) -> Iterator[_ChunkOutput]:
    """Yield chunk outputs in job order, computed in-process or by a bounded thread pool.

    Threads, not processes: numpy and Arrow release the GIL in the heavy kernels, and threads
    need no ``if __name__ == "__main__"`` guard in the caller (spawned processes re-import
    an unguarded ``__main__``) and no fork of a process that holds Arrow's thread pools.
    """
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)), 4)
    workers = min(workers, len(jobs))
    if workers <= 1:
        for job in jobs:
            yield _run_chunk(job, params, catalog)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate") as pool:
        pending: deque[Future[_ChunkOutput]] = deque()
        try:
            for job in jobs:
                pending.append(pool.submit(_run_chunk, job, params, catalog))
                if len(pending) > workers:  # bound memory: at most workers + 1 chunks in flight
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _clear_outputs(out_dir: Path) -> None:
    """Remove files a previous run wrote, so a smaller run leaves no stale parts behind."""
    for sub in ("events", "profiles"):
        d = out_dir / sub
        if d.is_dir():
            for pattern in ("part-*.parquet", "part-*.jsonl", "part-*.tmp"):
                for path in d.glob(pattern):
                    path.unlink()
    for sub in ("catalog", "ground_truth"):
        if (out_dir / sub).is_dir():
            shutil.rmtree(out_dir / sub)
    (out_dir / "_generator.json").unlink(missing_ok=True)


def _validate_args(customers: int, days: int, seed: int, fmt: str, start_date: date) -> None:
    if not isinstance(customers, int) or customers < 1:
        raise UserError(f"customers must be a positive integer, got {customers!r}")
    if not isinstance(days, int) or days < 7:
        raise UserError(f"days must be an integer >= 7, got {days!r}", "use e.g. --days 365")
    if not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if fmt not in ("parquet", "jsonl"):
        raise UserError(f"format must be 'parquet' or 'jsonl', got {fmt!r}")
    end = start_date + timedelta(days=days)
    if end > datetime.now(UTC).date():
        raise UserError(
            f"the window {start_date} .. {end} ends in the future; AEP rejects future event timestamps",
            "choose an earlier --start-date or fewer --days",
        )


def generate(
    customers: int,
    days: int,
    seed: int,
    out_dir: Path,
    fmt: str = "parquet",
    start_date: date = date(2024, 1, 1),
    *,
    params: PopulationParams | None = None,
    chunk_customers: int = 5_000,
    events_per_file: int = 2_000_000,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    activity_scale: float = 1.0,
) -> GenerateSummary:
    """Generate synthetic XDM events, profiles, a catalog and the ground truth under ``out_dir``.

    Same arguments => byte-identical files (with the same pyarrow version). The window is
    ``[start_date, start_date + days)`` in UTC. ``progress(done, total)`` is called per chunk.
    ``workers`` threads simulate chunks in parallel (default: up to 4 CPUs); the output does
    not depend on it, because every chunk has its own seed and chunks are written in order.
    ``activity_scale`` scales the events per person (:meth:`PopulationParams.with_activity`).
    """
    _validate_args(customers, days, seed, fmt, start_date)
    params = (params or PopulationParams()).with_activity(activity_scale)
    params.validate()
    if chunk_customers < 1 or events_per_file < 1:
        raise UserError("chunk_customers and events_per_file must be positive")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out_dir}: {exc.strerror}") from exc
    _clear_outputs(out_dir)

    catalog = _build_catalog(seed, params)
    start_ms = int(
        datetime(start_date.year, start_date.month, start_date.day, tzinfo=UTC).timestamp() * 1000
    )

    truths: list[pa.Table] = []
    profiles: list[pa.Table] = []
    purchases = 0
    type_counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    jobs = [
        _ChunkJob(chunk, first, min(chunk_customers, customers - first), seed, days, start_ms, fmt)
        for chunk, first in enumerate(range(0, customers, chunk_customers))
    ]
    with EventFileWriter(out_dir / "events", fmt=fmt, max_rows=events_per_file) as writer:
        for job, out in zip(jobs, _run_jobs(jobs, params, catalog, workers), strict=True):
            writer.write(out.events, encoded=out.encoded)
            type_counts += out.type_counts
            truths.append(out.truth)
            profiles.append(out.profiles)
            purchases += out.purchases
            if progress is not None:
                progress(job.first + job.size, customers)

    written = list(writer.paths)
    profile_table = pa.concat_tables(profiles)
    truth_table = pa.concat_tables(truths)
    nbytes = sum(p.stat().st_size for p in written)
    nbytes += write_table(profile_table, out_dir / "profiles" / f"part-00000.{fmt}", fmt)
    nbytes += write_table(catalog.table(), out_dir / "catalog" / "products.parquet")
    nbytes += write_table(truth_table, out_dir / "ground_truth" / "customers.parquet")
    args = {
        "customers": customers,
        "days": days,
        "seed": seed,
        "fmt": fmt,
        "start_date": start_date.isoformat(),
        "end_date_exclusive": (start_date + timedelta(days=days)).isoformat(),
        "chunk_customers": chunk_customers,
        "events_per_file": events_per_file,
        "activity_scale": activity_scale,
    }
    params_doc = _params_document(params, catalog, args)
    params_path = out_dir / "ground_truth" / "params.json"
    params_path.write_text(json.dumps(params_doc, indent=2) + "\n", encoding="utf-8")
    nbytes += params_path.stat().st_size
    files = len(written) + 5  # + profiles, catalog, customers, params.json, _generator.json
    events_by_type = {t: int(c) for t, c in zip(EVENT_TYPES, type_counts, strict=True)}
    meta = {
        "generator": "profile_enrichment.generate",
        "arguments": args,
        "counts": {
            "customers": customers,
            "known_customers": profile_table.num_rows,
            "events": writer.rows_written,
            "purchases": purchases,
            "event_files": len(written),
            "events_by_type": events_by_type,
        },
    }
    meta_path = out_dir / "_generator.json"
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    nbytes += meta_path.stat().st_size
    return GenerateSummary(
        customers=customers,
        known_customers=profile_table.num_rows,
        events=writer.rows_written,
        purchases=purchases,
        files=files,
        bytes=nbytes,
        seconds=time.perf_counter() - t0,
        event_files=len(written),
        events_by_type=events_by_type,
    )


def _params_document(
    params: PopulationParams, catalog: _Catalog, args: dict[str, Any]
) -> dict[str, Any]:
    """params.json: what a model should recover, in the units the events use."""
    p = asdict(params)
    return {
        "time_unit": "days",
        "currency_code": CURRENCY,
        "bgnbd": {
            "r": p.pop("r"),
            "alpha": p.pop("alpha"),
            "a": p.pop("a"),
            "b": p.pop("b"),
            "story": "lambda ~ Gamma(shape=r, rate=alpha) purchases/day; p ~ Beta(a, b); first "
            "purchase at join (time 0); repeat purchases Poisson(lambda) while alive; after each "
            "repeat purchase the customer drops out with probability p.",
        },
        "gamma_gamma": {
            "p": p.pop("gg_p"),
            "q": p.pop("gg_q"),
            "gamma": p.pop("gg_gamma"),
            "order_value_scale": 1.0,
            "story": "nu ~ Gamma(shape=q, rate=gamma); order value z ~ Gamma(shape=p, rate=nu) in "
            "USD, rounded to cents (at least 1 cent per line). E[z] = p * gamma / (q - 1).",
        },
        "dirichlet": {
            "concentration": p.pop("dirichlet_concentration"),
            "alpha": dict(
                zip(catalog.category_ids, np.round(catalog.category_alpha, 6).tolist(), strict=True)
            ),
        },
        "fractions": {
            "anonymous_visitors": p.pop("anonymous_fraction"),
            "registered_nonbuyers": p.pop("nonbuyer_fraction"),
            "buyers": round(1.0 - params.anonymous_fraction - params.nonbuyer_fraction, 10),
            "pre_login_browsing_of_registered": p.pop("pre_login_fraction"),
            "second_device": p.pop("second_device_fraction"),
            "join_span_of_window": p.pop("join_span_fraction"),
        },
        "activity": p,
        "catalog": {
            "categories": dict(zip(catalog.category_ids, catalog.category_names, strict=True)),
            "n_skus": len(catalog.sku),
        },
        "generator_arguments": args,
    }
