"""Mission knowledge graphs in the factory: DAG validation with networkx, LLM generation, the `kg` commands.

Parsing and structural checks of mission files live in the runtime (`packetclip.missions`); this package adds
what needs networkx or a network client.
"""
