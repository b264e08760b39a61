"""Generate the small datasets the configs in ``configs/examples/`` train on (nothing is committed but this script).

Usage::

    python examples/make_data.py [--out data/examples] [--rows 20000] [--seed 0]

Writes, under ``--out``:

* ``ml-tiny/ml-tiny.inter``, ``.user``, ``.item``: a MovieLens-like dataset in RecBole's atomic files (tab-separated,
  typed headers ``user_id:token``, ``class:token_seq``, ``rating:float``). A rating is high when the movie's genres
  include the user's favourite genre, which mostly follows the user's age and gender (from the ``.user`` file), and
  with the movie's quality. About 5% of the users are missing from ``ml-tiny.user`` (their side values are empty).
* ``taobao/train.csv`` + ``taobao/users.csv``: a Taobao-display-ad-like header CSV (label ``clk``, a timestamp,
  ids, a float ``price`` with empty values, a ``^``-separated ``click_sequence`` of ad ids, some empty) and a user
  side table (``shopping_level``, ``age_level``; about 5% of users missing). A click is likelier when the ad is in
  the user's click sequence, for high shopping levels and for cheap ads.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def _write(path: str, header: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(header + "\n" + "".join(line + "\n" for line in lines))


def movielens(out: str, rows: int, rng: np.random.Generator) -> None:
    """RecBole atomic files of a MovieLens-like rating log."""
    n_users, n_items = max(rows // 30, 50), max(rows // 50, 40)
    age = rng.integers(0, 7, n_users)
    gender = rng.integers(0, 2, n_users)
    # The favourite genre follows (age, gender) for 80% of the users, else it is random.
    fav = np.where(rng.random(n_users) < 0.8, (age * 2 + gender) % len(GENRES), rng.integers(0, len(GENRES), n_users))
    genres = [rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False) for _ in range(n_items)]
    quality = rng.normal(0, 0.7, n_items)
    year = rng.integers(1950, 2001, n_items)
    u = rng.integers(0, n_users, rows)
    i = rng.integers(0, n_items, rows)
    score = np.array([1.6 * (fav[a] in genres[b]) for a, b in zip(u, i, strict=True)]) + quality[i] \
        + rng.normal(0, 0.8, rows)
    rating = np.clip(np.round(3 + score), 1, 5)
    ts = 978_300_000 + np.sort(rng.integers(0, 10_000_000, rows))
    base = os.path.join(out, "ml-tiny", "ml-tiny")
    _write(base + ".inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float",
           [f"{a + 1}\t{b + 1}\t{r:.1f}\t{t}" for a, b, r, t in zip(u, i, rating, ts, strict=True)])
    known = np.flatnonzero(rng.random(n_users) >= 0.05)
    _write(base + ".user", "user_id:token\tage:token\tgender:token\toccupation:token",
           [f"{a + 1}\t{age[a] * 10 + 18}\t{'MF'[gender[a]]}\t{rng.integers(0, 21)}" for a in known])
    _write(base + ".item", "item_id:token\trelease_year:token\tclass:token_seq",
           [f"{b + 1}\t{year[b]}\t{' '.join(GENRES[g] for g in genres[b])}" for b in range(n_items)])


def taobao(out: str, rows: int, rng: np.random.Generator) -> None:
    """A header CSV in the Taobao display-ad layout of FuxiCTR's demo data, plus a user side table."""
    n_users, n_ads = max(rows // 20, 50), max(rows // 40, 50)
    user = rng.integers(0, n_users, rows)
    ad = rng.integers(0, n_ads, rows)
    level = rng.integers(1, 4, n_users)
    price = np.round(np.exp(rng.normal(3.5, 1.0, n_ads)), 1)
    # Each user's history: ads it clicked before (mean length ~8, some empty); the ad shown is often among them.
    history = [rng.integers(0, n_ads, rng.poisson(8)) for _ in range(n_users)]
    shown_again = rng.random(rows) < 0.3
    ad = np.where(shown_again & (np.array([len(history[u]) for u in user]) > 0),
                  [history[u][rng.integers(len(history[u]))] if len(history[u]) else 0 for u in user], ad)
    cate = ad % 37
    in_hist = np.array([a in history[u] for u, a in zip(user, ad, strict=True)])
    logit = -2.2 + 1.8 * in_hist + 0.8 * (level[user] - 2) - 0.3 * (np.log(price[ad]) - 3.5)
    clk = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    ts = 1494000000 + np.sort(rng.integers(0, 7 * 86400, rows))
    lines = []
    for k in range(rows):
        p = "" if rng.random() < 0.05 else f"{price[ad[k]]:.1f}"
        seq = "^".join(str(x + 100000) for x in history[user[k]])
        lines.append(f"{clk[k]},{ts[k]},{user[k] + 1},{ad[k] + 100000},{cate[k] + 5000},{p},"
                     f"{'430548_1007' if k % 3 else '430539_1007'},{seq}")
    _write(os.path.join(out, "taobao", "train.csv"),
           "clk,time_stamp,userid,adgroup_id,cate_id,price,pid,click_sequence", lines)
    known = np.flatnonzero(rng.random(n_users) >= 0.05)
    _write(os.path.join(out, "taobao", "users.csv"), "userid,age_level,shopping_level",
           [f"{u + 1},{rng.integers(1, 7)},{level[u]}" for u in known])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/examples", help="output directory (default: data/examples)")
    ap.add_argument("--rows", type=int, default=20000, help="interactions per dataset (default 20000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    movielens(args.out, args.rows, np.random.default_rng(args.seed))
    taobao(args.out, args.rows, np.random.default_rng(args.seed + 1))
    print(f"wrote {args.out}/ml-tiny/ml-tiny.{{inter,user,item}} and {args.out}/taobao/{{train,users}}.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
