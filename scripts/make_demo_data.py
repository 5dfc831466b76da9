#!/usr/bin/env python3
"""Writes the demo's fine-tuning set, data/demo/{train,val}.jsonl: short weather forecasts
in prompt/completion form, a modern, formulaic style that the demo's base model (trained on
the King James Bible) has never seen. Everything is generated here from word lists and a
seeded RNG, so the data is the project's own. Regenerate with
    python3 scripts/make_demo_data.py
"""
import json
import os
import random

rng = random.Random(2026)
CITIES = ["Lisbon", "Oslo", "Cairo", "Lima", "Perth", "Quebec", "Nairobi", "Reykjavik", "Madrid",
          "Osaka", "Dublin", "Santiago", "Vienna", "Hanoi", "Denver", "Tunis", "Bergen", "Porto",
          "Seville", "Krakow", "Tallinn", "Havana", "Auckland", "Calgary", "Marseille", "Glasgow",
          "Bologna", "Cusco", "Dakar", "Zagreb", "Tromso", "Valencia", "Leipzig", "Busan"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WINDS = ["north", "south", "east", "west", "northwest", "southwest", "northeast", "southeast"]
# condition: (temperature range of the high, advice options)
CONDITIONS = {
    "sunny and warm": ((22, 34), ["Good day for a walk.", "Wear sunscreen.", "Drink plenty of water."]),
    "clear and cold": ((-8, 6), ["Wear a warm coat.", "Watch for ice on the roads.", "Gloves recommended."]),
    "light rain": ((8, 18), ["Take an umbrella.", "Roads may be slippery.", "A light jacket will do."]),
    "heavy rain": ((6, 16), ["Stay indoors if you can.", "Expect delays on the roads.", "Take an umbrella."]),
    "thunderstorms": ((18, 30), ["Avoid open fields.", "Stay indoors during the storm.", "Unplug sensitive devices."]),
    "snow showers": ((-10, 1), ["Drive slowly.", "Wear boots.", "Watch for ice on the roads."]),
    "fog in the morning": ((5, 15), ["Drive with low beams.", "Visibility will improve by noon.", "Allow extra time."]),
    "partly cloudy": ((12, 24), ["A fine day overall.", "A light jacket will do.", "Good day for a walk."]),
    "windy": ((4, 16), ["Secure loose objects.", "Hold on to your hat.", "Cycling will be hard work."]),
}


def example():
    city, day = rng.choice(CITIES), rng.choice(DAYS)
    cond, ((lo_t, hi_t), advice) = rng.choice(list(CONDITIONS.items()))
    high = rng.randint(lo_t, hi_t)
    low = high - rng.randint(4, 10)
    wind = rng.randint(5, 45) if cond != "windy" else rng.randint(40, 80)
    completion = (f" {cond}, high {high}, low {low}. Wind from the {rng.choice(WINDS)} at {wind} km/h. "
                  f"{rng.choice(advice)}")
    return {"prompt": f"Forecast for {city}, {day}:", "completion": completion}


here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "demo")
os.makedirs(here, exist_ok=True)
for name, n in [("train.jsonl", 2000), ("val.jsonl", 200)]:
    with open(os.path.join(here, name), "w") as f:
        for _ in range(n):
            f.write(json.dumps(example()) + "\n")
print("wrote data/demo/train.jsonl (2000) and val.jsonl (200)")
