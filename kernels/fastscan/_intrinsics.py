"""LLVM IR for the SIMD block kernels (the only module that emits x86 intrinsics).

Plain numba cannot emit byte shuffles, so each block kernel is an ``@intrinsic`` that builds LLVM IR
(llvmlite) calling the x86 shuffle intrinsics directly.  A kernel is only *built* for an instruction
set the compile target has (see :mod:`.block_kernels`): LLVM cannot lower an AVX-512 intrinsic for a
CPU without AVX-512.

**Accumulation** (exact, no saturating instructions).  ``pshufb``: per code byte, the nibbles index the
lane-broadcast tables of sub-quantisers ``2j`` and ``2j + 1``; each looked-up result ``r`` is added to
two uint16 accumulators, ``F += r`` (lanes read as low + 256·high, wrapping) and ``H += r >> 8`` (high
bytes); at the end ``F − 256·H`` is the exact low-byte sum and ``H`` the high-byte sum (both < 65536, so
the wrap-around cancels).  ``vbmi``: ``vpermb`` looks up 64 bytes in a 64-byte register holding four
16-entry tables (selected by bits 4–5 of the index, set from the byte's position in its dword), and
``vpdpbusd`` (not the saturating ``vpdpbusds``) adds each dword's four looked-up bytes into that row's
int32 lane, truncated to uint16 at the end.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I1 = ir.IntType(1)
_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)

#: Block kernel kinds: (layout, rows per call).
KINDS = {"avx2": ("pshufb", 32), "avx512": ("pshufb", 64), "vbmi": ("vbmi", 32)}


def _const_vec(ty, values):
    return ir.Constant(ir.VectorType(ty, len(values)), [ir.Constant(ty, v) for v in values])


_BUILT: dict = {}


def simd_block_kernel(kind: str, queries: int):
    """The ``@intrinsic`` block kernel of ``kind`` for ``queries`` queries per code load (built once).

    ``kind``: ``"avx2"`` (pshufb layout, 32 rows), ``"avx512"`` (pshufb layout, 64 rows: blocks at
    ``code_off`` and ``code_off2``) or ``"vbmi"`` (vbmi layout, 32 rows).  Call signature and outputs are
    those of the block-kernel contract in :mod:`.block_kernels`.
    """
    if (kind, queries) not in _BUILT:
        _BUILT[kind, queries] = _new_kernel(kind, queries)
    return _BUILT[kind, queries]


def _new_kernel(kind: str, queries: int):
    width = KINDS[kind][1]
    vbytes = ir.VectorType(_I8, 64 if kind == "vbmi" else width)
    acc_ty = ir.VectorType(_I32, 16) if kind == "vbmi" else ir.VectorType(_I16, width // 2)

    @intrinsic
    def kern(typingctx, lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks):
        sig = types.void(lut, lut_off, lut_stride, codes, code_off, code_off2, nsteps, min_sums, sums, masks)

        def codegen(context, builder, signature, args):
            a = signature.args
            lut_off_v, lut_stride_v, coff, coff2, nsteps_v = (
                context.cast(builder, args[t], a[t], types.int64) for t in (1, 2, 4, 5, 6))
            ptr = {t: context.make_array(a[t])(context, builder, args[t]).data for t in (0, 3, 7, 8, 9)}
            lut_p, code_p, min_p, sums_p, mask_p = (ptr[t] for t in (0, 3, 7, 8, 9))
            module = builder.module

            def declare(name, ret, argtys):
                return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, argtys), name)

            def load(base, off, ty):
                p = builder.gep(base, [off], inbounds=True)
                return builder.load(builder.bitcast(p, ty.as_pointer()), align=1)

            def const(v):
                return ir.Constant(_I64, v)

            query_base = [builder.add(lut_off_v, builder.mul(lut_stride_v, const(t))) for t in range(queries)]
            low_nibble = _const_vec(_I8, [15] * vbytes.count)
            four = _const_vec(_I16, [4] * (vbytes.count // 2))

            def high_nibbles(c):
                w = builder.bitcast(c, ir.VectorType(_I16, vbytes.count // 2))
                return builder.and_(builder.bitcast(builder.lshr(w, four), vbytes), low_nibble)

            if kind == "vbmi":
                permb = declare("llvm.x86.avx512.permvar.qi.512", vbytes, [vbytes, vbytes])
                dpbusd = declare("llvm.x86.avx512.vpdpbusd.512", acc_ty, [acc_ty, acc_ty, acc_ty])
                table_select = _const_vec(_I8, [(i % 4) << 4 for i in range(64)])  # table = byte position in dword
                ones = builder.bitcast(_const_vec(_I8, [1] * 64), acc_ty)

                def step(j, accs):
                    """Chunk ``j`` (sub-quantisers 8j..8j+7) of rows 0-15 / 16-31 into accs[2t], accs[2t+1]."""
                    cj = builder.mul(j, const(128))
                    idx = []
                    for v in range(2):
                        c = load(code_p, builder.add(coff, builder.add(cj, const(64 * v))), vbytes)
                        idx.append((builder.or_(builder.and_(c, low_nibble), table_select),
                                    builder.or_(high_nibbles(c), table_select)))
                    out = list(accs)
                    for t in range(queries):
                        tb = builder.add(query_base[t], cj)
                        tabs = (load(lut_p, tb, vbytes), load(lut_p, builder.add(tb, const(64)), vbytes))
                        for v in range(2):
                            for h in range(2):
                                r = builder.bitcast(builder.call(permb, [tabs[h], idx[v][h]]), acc_ty)
                                out[2 * t + v] = builder.call(dpbusd, [out[2 * t + v], r, ones])
                    return out
            else:
                name = "llvm.x86.avx2.pshuf.b" if width == 32 else "llvm.x86.avx512.pshuf.b.512"
                pshufb = declare(name, vbytes, [vbytes, vbytes])
                eight = _const_vec(_I16, [8] * (width // 2))

                def step(j, accs):
                    """Code byte ``j`` (sub-quantisers 2j, 2j + 1) into (F, H) = accs[2t], accs[2t + 1]."""
                    cj = builder.mul(j, const(32))
                    if width == 32:
                        c = load(code_p, builder.add(coff, cj), vbytes)
                    else:
                        half = ir.VectorType(_I8, 32)
                        c = builder.shuffle_vector(load(code_p, builder.add(coff, cj), half),
                                                   load(code_p, builder.add(coff2, cj), half),
                                                   _const_vec(_I32, list(range(64))))
                    lo = builder.and_(c, low_nibble)
                    hi = high_nibbles(c)
                    out = list(accs)
                    for t in range(queries):
                        tb = builder.add(query_base[t], builder.mul(j, const(128)))  # 2 broadcast tables of 64 B
                        r0 = builder.bitcast(builder.call(pshufb, [load(lut_p, tb, vbytes), lo]), acc_ty)
                        r1 = builder.bitcast(builder.call(pshufb, [load(lut_p, builder.add(tb, const(64)), vbytes),
                                                                   hi]), acc_ty)
                        out[2 * t] = builder.add(accs[2 * t], builder.add(r0, r1))
                        out[2 * t + 1] = builder.add(accs[2 * t + 1], builder.add(builder.lshr(r0, eight),
                                                                                  builder.lshr(r1, eight)))
                    return out

            # for (j = 0; j < nsteps; j++) accs = step(j, accs)
            entry = builder.block
            head = builder.append_basic_block("fs.head")
            body = builder.append_basic_block("fs.body")
            done = builder.append_basic_block("fs.done")
            builder.branch(head)
            builder.position_at_end(head)
            j = builder.phi(_I64)
            accs = [builder.phi(acc_ty) for _ in range(2 * queries)]
            zero = ir.Constant(acc_ty, None)
            j.add_incoming(const(0), entry)
            for ph in accs:
                ph.add_incoming(zero, entry)
            builder.cbranch(builder.icmp_signed("<", j, nsteps_v), body, done)
            builder.position_at_end(body)
            new = step(j, accs)
            j.add_incoming(builder.add(j, const(1)), builder.block)
            for ph, v in zip(accs, new):
                ph.add_incoming(v, builder.block)
            builder.branch(head)

            builder.position_at_end(done)
            for t in range(queries):
                if kind == "vbmi":
                    s32 = builder.shuffle_vector(accs[2 * t], accs[2 * t + 1], _const_vec(_I32, list(range(32))))
                    s16 = builder.trunc(s32, ir.VectorType(_I16, 32))
                    thr = builder.trunc(builder.load(builder.gep(min_p, [const(t)], inbounds=True)), _I32)
                    cmp_v, cmp_ty = s32, _I32
                else:
                    f, h = accs[2 * t], accs[2 * t + 1]
                    low = builder.sub(f, builder.shl(h, eight))
                    if width == 32:  # rows 0-15 are the low bytes, 16-31 the high bytes
                        order = list(range(32))
                    else:  # word lanes 0-15 come from the first block, 16-31 from the second
                        order = list(range(16)) + list(range(32, 48)) + list(range(16, 32)) + list(range(48, 64))
                    s16 = builder.shuffle_vector(low, h, _const_vec(_I32, order))
                    thr = builder.trunc(builder.load(builder.gep(min_p, [const(t)], inbounds=True)), _I16)
                    cmp_v, cmp_ty = s16, _I16
                sp = builder.gep(sums_p, [const(64 * t)], inbounds=True)
                builder.store(s16, builder.bitcast(sp, s16.type.as_pointer()), align=2)
                vt = ir.VectorType(cmp_ty, width)
                splat = builder.shuffle_vector(builder.insert_element(ir.Constant(vt, None), thr, ir.Constant(_I32, 0)),
                                               ir.Constant(vt, None), _const_vec(_I32, [0] * width))
                bits = builder.bitcast(builder.icmp_unsigned(">=", cmp_v, splat), ir.IntType(width))
                builder.store(builder.zext(bits, _I64) if width < 64 else bits,
                              builder.gep(mask_p, [const(t)], inbounds=True))
            return context.get_dummy_value()

        return sig, codegen

    return kern


@intrinsic
def lowest_set_bit(typingctx, x):
    """Index of the lowest set bit of a non-zero int64 (``tzcnt``)."""
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(_I1, 1))

    return sig, codegen


@intrinsic
def cache_line_offset(typingctx, arr):
    """Address of ``arr``'s data modulo 64 (to put the kernel tables on cache-line boundaries)."""
    sig = types.int64(arr)

    def codegen(context, builder, signature, args):
        ptr = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.and_(builder.ptrtoint(ptr, _I64), ir.Constant(_I64, 63))

    return sig, codegen
