"""Online architecture evolution: a population of challengers beside the champion, under a compute budget."""
