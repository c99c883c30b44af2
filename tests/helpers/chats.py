"""A Danish chat the chat-template tests render: a system prompt and two user/assistant turns."""

CONV = [
    {"role": "system", "content": "Du er en hjælpsom assistent."},
    {"role": "user", "content": "Hvad er Danmarks hovedstad?"},
    {"role": "assistant", "content": "København."},
    {"role": "user", "content": "Og den næststørste by?"},
    {"role": "assistant", "content": "Aarhus, i Østjylland."},
]
