#!/usr/bin/env python3
"""Writes the project's own small chat data set, data/chat/{train,val}.jsonl: conversations
with a weather assistant in the `messages` format (a list of {"role", "content"} with roles
system, user and assistant), one to three user turns each, for chat fine-tuning demos and
tests (dataset_format: chat_template). The assistant's answers follow from the question's
facts, so a model can learn them; the system message is present in about half of the
conversations. Everything is generated here from word lists and a seeded RNG, so the data is
the project's own. Regenerate with
    python3 scripts/make_chat_data.py
"""
import json
import os
import random

rng = random.Random(2027)
CITIES = ["Lisbon", "Oslo", "Cairo", "Lima", "Perth", "Quebec", "Nairobi", "Reykjavik", "Madrid",
          "Osaka", "Dublin", "Santiago", "Vienna", "Hanoi", "Denver", "Tunis", "Bergen", "Porto"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# condition: (range of the high in degrees C, needs an umbrella, needs a coat)
CONDITIONS = {
    "sunny and warm": ((22, 34), False, False),
    "clear and cold": ((-8, 6), False, True),
    "light rain": ((8, 18), True, False),
    "heavy rain": ((6, 16), True, True),
    "thunderstorms": ((18, 30), True, False),
    "snow showers": ((-10, 1), False, True),
    "partly cloudy": ((12, 24), False, False),
}
SYSTEM = ["You are a concise weather assistant.", "Answer weather questions in one or two sentences."]
ASK = ["What is the weather in {city} on {day}?", "How will {day} be in {city}?",
       "Forecast for {city}, {day}, please."]


def forecast():
    city, day = rng.choice(CITIES), rng.choice(DAYS)
    cond, ((lo, hi), umbrella, coat) = rng.choice(list(CONDITIONS.items()))
    return city, day, cond, rng.randint(lo, hi), umbrella, coat


def conversation():
    """One conversation: an optional system message, then 1-3 question/answer pairs."""
    msgs = [{"role": "system", "content": rng.choice(SYSTEM)}] if rng.random() < 0.5 else []
    city, day, cond, high, umbrella, coat = forecast()
    msgs.append({"role": "user", "content": rng.choice(ASK).format(city=city, day=day)})
    msgs.append({"role": "assistant", "content": f"{city} on {day}: {cond}, with a high of {high} C."})
    if rng.random() < 0.5:
        msgs.append({"role": "user", "content": "Do I need an umbrella?"})
        msgs.append({"role": "assistant", "content": "Yes, take one." if umbrella else "No, it should stay dry."})
    if rng.random() < 0.3:
        msgs.append({"role": "user", "content": "And a coat?"})
        msgs.append({"role": "assistant", "content": "Yes, it will be cold." if coat else "No, a light layer is enough."})
    return {"messages": msgs}


here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "chat")
os.makedirs(here, exist_ok=True)
for name, n in [("train.jsonl", 1000), ("val.jsonl", 100)]:
    with open(os.path.join(here, name), "w") as f:
        for _ in range(n):
            f.write(json.dumps(conversation()) + "\n")
print("wrote data/chat/train.jsonl (1000) and val.jsonl (100)")
