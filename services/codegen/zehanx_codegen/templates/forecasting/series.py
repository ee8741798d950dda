"""The forecasting model, shared by train.py and predict.py: a linear autoregression on the
differenced series.

Differencing twice, z[t] = (y[t] - y[t-1]) - (y[t-s] - y[t-s-1]) for a season of s steps, removes
the trend and the seasonal pattern; what is left is small and roughly stationary, and a linear model
of its recent past (least squares) predicts it well. Forecasts are made one step at a time, each
feeding the next, and the differencing is undone to get back to the series' own units.
"""

import datetime
import re

import torch

MONTH = re.compile(r"^(\d{4})-(\d{1,2})(-01)?$")


def time_value(text, unit=None):
    """A position on one time axis: months for '1949-01', days for dates and times, else the number.

    `unit` forces the reading: a daily series has dates like '2020-03-01' that look monthly.
    """
    s = str(text).strip()
    month = MONTH.match(s) if unit in (None, "month") else None
    if month:
        return float(int(month.group(1)) * 12 + int(month.group(2)) - 1), "month"
    try:
        moment = datetime.datetime.fromisoformat(s)
        return moment.timestamp() / 86400.0 if moment.tzinfo else moment.toordinal() + (
            moment.hour * 3600 + moment.minute * 60 + moment.second) / 86400.0, "day"
    except ValueError:
        pass
    return float(s), "number"


def season_from_spacing(step, unit):
    """Steps per season, read from how far apart the observations are."""
    if unit == "month":
        return {1: 12, 3: 4}.get(round(step), 1)  # monthly: a year; quarterly: a year
    if unit == "day":
        if abs(step - 1) < 1e-6:
            return 7  # daily: a week
        if abs(step - 7) < 1e-6:
            return 52  # weekly: a year
        if abs(step * 24 - 1) < 1e-6:
            return 24  # hourly: a day
    return 1


def difference(y, season):
    """z[t] = y[t] - y[t-1] - (y[t-s] - y[t-s-1]) (or just y[t] - y[t-1] without a season)."""
    z = y[1:] - y[:-1]
    return z[season:] - z[:-season] if season > 1 else z


def fit(y, season, lags, ridge):
    """Least-squares coefficients of z[t] on 1 and z[t-k] for k in lags (ridge keeps it stable).

    With a season, z is differenced twice (d + D = 2) and the model has no constant: a constant
    there is a trend in the trend, a quadratic curve that a recursive forecast extends without end
    (Box-Jenkins practice; R's forecast::Arima drops the constant whenever d + D > 1). The first
    coefficient stays in place, at 0, so the stored model keeps its shape.
    """
    z = difference(y, season)
    p = max(lags)
    if len(z) - p < len(lags) + 2:
        raise ValueError(f"{len(y)} points are too few for lags {lags} with season {season}")
    constant = torch.ones(len(z) - p, dtype=y.dtype) if season <= 1 else torch.zeros(len(z) - p, dtype=y.dtype)
    x = torch.stack([constant] + [z[p - k : len(z) - k] for k in lags], 1)
    target = z[p:]
    penalty = ridge * torch.eye(x.shape[1], dtype=y.dtype) * len(target)
    penalty[0, 0] = 0 if season <= 1 else 1.0  # the intercept is not pulled towards zero (when there is one)
    return torch.linalg.solve(x.T @ x + penalty, x.T @ target)


def forecast(y, season, lags, coefficients, horizon):
    """The next `horizon` values after the history `y`, one step at a time."""
    history = [float(v) for v in y]
    z = [float(v) for v in difference(y, season)]
    out = []
    for _ in range(horizon):
        z_next = float(coefficients[0]) + sum(float(c) * z[-k] for c, k in zip(coefficients[1:], lags))
        z.append(z_next)
        # undo the differencing: y[t] = z[t] + y[t-1] + y[t-s] - y[t-s-1]
        y_next = z_next + history[-1] + (history[-season] - history[-season - 1] if season > 1 else 0.0)
        history.append(y_next)
        out.append(y_next)
    return out
