"""Dependency tokens from buffer-slot use: the emitter records which slots each instruction reads and
writes; this pass turns every cross-queue hazard into a token on the channel between the two queues.

RAW (a load's data read by compute, compute's results read by a store) and WAR (a slot rewritten after
another queue read it) hazards become one pop on the consumer and one push on a producer. Tokens are
counted, so the k-th pop on a channel takes the k-th push: walking consumers in order, each pushes at the
latest producer any consumer so far needed (a prefix maximum), which keeps the pairing in order and every
consumer behind the instruction it depends on.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from hwsim.accel.isa import Instr

# (producer queue, consumer queue) -> (producer push field, consumer pop field)
CHANNELS = {("load", "compute"): ("push_next", "pop_prev"), ("compute", "load"): ("push_prev", "pop_next"),
            ("compute", "store"): ("push_next", "pop_prev"), ("store", "compute"): ("push_prev", "pop_next")}


@dataclass
class Slotted:
    """An instruction and the buffer slots (buffer, slot address) it reads and writes."""

    instr: Instr
    reads: list[tuple[int, int]] = field(default_factory=list)
    writes: list[tuple[int, int]] = field(default_factory=list)


def assign_tokens(items: list[Slotted]) -> list[Instr]:
    """Set the token counts of one layer's instructions (queues drain at layer boundaries)."""
    last_writer: dict[tuple[int, int], int] = {}
    readers: dict[tuple[int, int], list[int]] = defaultdict(list)
    needs: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)  # channel -> consumer -> producer

    def depend(producer: int, consumer: int) -> None:
        pq, cq = items[producer].instr.queue, items[consumer].instr.queue
        if pq == cq:
            return  # an in-order queue already serialises them
        if (pq, cq) not in CHANNELS:
            raise ValueError(f"instruction {consumer} ({cq}) depends on {producer} ({pq}): no token channel "
                             "between those queues")
        chan = needs[(pq, cq)]
        chan[consumer] = max(chan.get(consumer, -1), producer)

    for i, item in enumerate(items):
        for slot in item.reads:
            if slot in last_writer:
                depend(last_writer[slot], i)
        for slot in item.writes:
            for r in readers[slot]:
                depend(r, i)
            if slot in last_writer:
                depend(last_writer[slot], i)
        for slot in item.reads:
            readers[slot].append(i)
        for slot in item.writes:
            last_writer[slot] = i
            readers[slot] = []
    for (pq, cq), chan in needs.items():
        push, pop = CHANNELS[(pq, cq)]
        latest = -1
        for consumer in sorted(chan):
            latest = max(latest, chan[consumer])
            setattr(items[latest].instr, push, getattr(items[latest].instr, push) + 1)
            setattr(items[consumer].instr, pop, getattr(items[consumer].instr, pop) + 1)
    return [item.instr for item in items]
