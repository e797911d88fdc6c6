# Handler actions, validated before a step commits (the twin does the same with
# engine._actions.prepare; keep the two in step).


@cython.final
@cython.freelist(8)
cdef class _Prep:
    cdef bint postpone
    cdef list front      # [(event code, payload, lane)] or None
    cdef tuple reply     # (True, value) or None
    cdef object send1    # the first Send (most steps send at most one: no list to allocate)
    cdef list sends      # further Sends, or None
    cdef list runtime    # [(action, event code)] or None
    cdef bint work       # a Work action among them


cdef _Prep _prepare(MachTab* mt, object actions):
    """Classify and validate ``actions``; raise as ``engine._actions.prepare`` does."""
    cdef _Prep out = _Prep.__new__(_Prep)
    cdef object machine = <object>mt.machine
    for action in actions:
        kind = type(action)
        if kind is Send:
            if out.send1 is None:
                out.send1 = action
            elif out.sends is None:
                out.sends = [action]
            else:
                out.sends.append(action)
        elif kind is Postpone:
            out.postpone = True
        elif kind is NextEvent:
            if out.front is None:
                out.front = []
            out.front.append((machine.event_code(action.event), action.payload,
                              _action_lane(action.priority)))
        elif kind is Reply:
            if out.reply is not None:
                raise TypeError("a step can Reply only once")
            out.reply = (True, action.value)
        elif kind is StateTimeout or kind is EventTimeout or kind is Timer:
            _action_lane(action.priority)
            if out.runtime is None:
                out.runtime = []
            out.runtime.append((action, machine.event_code(action.event)))
        elif kind is CancelTimer or kind is Work:
            if kind is Work:
                out.work = True
                for name in (action.done, action.failed):
                    if name is not None:
                        machine.event_code(name)
            if out.runtime is None:
                out.runtime = []
            out.runtime.append((action, -1))
        else:
            raise TypeError(f"{action!r} is not an action")
    return out


cdef inline int _action_lane(object priority) except -1:
    return _lane(priority)
