using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Iommu.Devices;

namespace Iommu.VtD.Hardware;

/// <content>The register file: every register declared once with its reset value and access masks.</content>
public sealed partial class VtdUnit
{
    // Register storage is byte-granular with three masks per byte, the scheme QEMU uses:
    // a write stores ((old & ~wmask) | (val & wmask)) & ~(w1c & val); a read returns val & ~womask.
    // RO = no mask bit, RW = wmask, RW1C = w1c, WO = wmask + womask.
    private byte[] _regs = [];
    private byte[] _wmask = [];
    private byte[] _w1cmask = [];
    private byte[] _womask = [];

    private uint _iotlbRegs;   // ECAP.IRO × 16
    private uint _faultRegs;   // CAP.FRO × 16

    private void InitRegisters()
    {
        _iotlbRegs = VtdConfig.IotlbRegisterOffset;
        _faultRegs = VtdConfig.FaultRecordingRegisterOffset;
        int size = (int)Math.Max(0x1000u, _faultRegs + ((uint)_config.FaultRecordCount * VtdRegister.FaultRecordSize));
        // Allocated once: a reset or restore rewrites every register in place, one aligned store each, so a lock-free
        // 32-bit read meanwhile sees the old value or the reset one, never a zero from a fresh array (the register
        // file's size and masks depend only on the configuration, which never changes).
        if (_regs.Length != size)
        {
            _regs = new byte[size];
            _wmask = new byte[size];
            _w1cmask = new byte[size];
            _womask = new byte[size];
        }

        bool qi = _config.QueuedInvalidation;
        Define(VtdRegister.Ver, 4, _config.Version);
        Define(VtdRegister.Cap, 8, _config.Cap);
        Define(VtdRegister.Ecap, 8, _config.Ecap);
        Define(VtdRegister.Gcmd, 4, 0, wmask: 0xFF80_0000, womask: 0xFFFF_FFFF);
        Define(VtdRegister.Gsts, 4, 0);
        Define(VtdRegister.Rtaddr, 8, 0, wmask: ~0x3FFUL);
        Define(VtdRegister.Ccmd, 8, 0, wmask: 0xE000_0003_FFFF_FFFF);
        Define(VtdRegister.Fsts, 4, 0, w1c: VtdRegister.FstsPfo | VtdRegister.FstsIqe | VtdRegister.FstsIce | VtdRegister.FstsIte);
        Define(VtdRegister.Fectl, 4, VtdRegister.EventControlIm, wmask: VtdRegister.EventControlIm);
        Define(VtdRegister.Fedata, 4, 0, wmask: 0xFFFF);
        Define(VtdRegister.Feaddr, 4, 0, wmask: 0xFFFF_FFFC);
        Define(VtdRegister.Feuaddr, 4, 0, wmask: 0xFFFF_FFFF);
        Define(VtdRegister.Iqh, 8, 0);
        Define(VtdRegister.Iqt, 8, 0, wmask: qi ? 0x7FFF0UL : 0);
        Define(VtdRegister.Iqa, 8, 0, wmask: qi ? (_config.ScalableMode ? 0xFFFF_FFFF_FFFF_F807 : 0xFFFF_FFFF_FFFF_F007) : 0);
        Define(VtdRegister.Ics, 4, 0, w1c: qi ? VtdRegister.IcsIwc : 0);
        Define(VtdRegister.Iectl, 4, VtdRegister.EventControlIm, wmask: qi ? VtdRegister.EventControlIm : 0);
        Define(VtdRegister.Iedata, 4, 0, wmask: qi ? 0xFFFFu : 0);
        Define(VtdRegister.Ieaddr, 4, 0, wmask: qi ? 0xFFFF_FFFCu : 0);
        Define(VtdRegister.Ieuaddr, 4, 0, wmask: qi ? 0xFFFF_FFFFu : 0);
        Define(VtdRegister.Iqercd, 8, 0);
        // IRTA exists only with ECAP.IR; EIME (bit 11) needs ECAP.EIM, which this unit never reports.
        Define(VtdRegister.Irta, 8, 0, wmask: _config.InterruptRemapping ? 0xFFFF_FFFF_FFFF_F00FUL : 0);
        if (_config.PageRequests)
        {
            DefinePageRequestRegisters();
        }

        Define(_iotlbRegs + VtdRegister.IvaInPair, 8, 0, wmask: 0xFFFF_FFFF_FFFF_F07F, womask: 0xFFFF_FFFF_FFFF_F07F);
        Define(_iotlbRegs + VtdRegister.IotlbInPair, 8, 0, wmask: 0xB003_FFFF_0000_0000);
        for (int i = 0; i < _config.FaultRecordCount; i++)
        {
            uint rec = FaultRecordOffset(i);
            Define(rec, 8, 0);
            Define(rec + 8, 8, 0, w1c: VtdRegister.FrcdF);
        }
    }

    private void Define(uint offset, int size, ulong reset, ulong wmask = 0, ulong w1c = 0, ulong womask = 0)
    {
        Span<byte> tmp = stackalloc byte[8];
        Store(_regs, offset, size, reset, tmp);
        Store(_wmask, offset, size, wmask, tmp);
        Store(_w1cmask, offset, size, w1c, tmp);
        Store(_womask, offset, size, womask, tmp);

        static void Store(byte[] array, uint offset, int size, ulong value, Span<byte> tmp)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(tmp, value);
            tmp[..size].CopyTo(array.AsSpan((int)offset, size));
        }
    }

    private uint FaultRecordOffset(int index) => _faultRegs + ((uint)index * VtdRegister.FaultRecordSize);

    // Raw accessors: the hardware side, ignoring access masks.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint Get32(uint offset) => BinaryPrimitives.ReadUInt32LittleEndian(_regs.AsSpan((int)offset, 4));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Get64(uint offset) => BinaryPrimitives.ReadUInt64LittleEndian(_regs.AsSpan((int)offset, 8));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Set32(uint offset, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(_regs.AsSpan((int)offset, 4), value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Set64(uint offset, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(_regs.AsSpan((int)offset, 8), value);

    // Write-only bits of a dword (read as 0); the mask never changes after construction.
    private uint WriteOnlyMask32(uint offset) => BinaryPrimitives.ReadUInt32LittleEndian(_womask.AsSpan((int)offset, 4));

    private ulong ReadMmio64(uint offset) =>
        Get64(offset) & ~BinaryPrimitives.ReadUInt64LittleEndian(_womask.AsSpan((int)offset, 8));

    private void WriteMmio(uint offset, int size, ulong value)
    {
        if (offset == VtdRegister.Iqt && size == 8)
        {
            // The queued-invalidation doorbell, once per sync: the generic path below with its constants
            // folded (IQT has no RW1C bits, and its upper dword's write has no side effect).
            ulong iqtMask = BinaryPrimitives.ReadUInt64LittleEndian(_wmask.AsSpan((int)VtdRegister.Iqt, 8));
            Set64(VtdRegister.Iqt, (Get64(VtdRegister.Iqt) & ~iqtMask) | (value & iqtMask));
            ProcessInvalidationQueue();
            return;
        }

        ulong old, wm, w1c;
        if (size == 4)
        {
            old = Get32(offset);
            wm = BinaryPrimitives.ReadUInt32LittleEndian(_wmask.AsSpan((int)offset, 4));
            w1c = BinaryPrimitives.ReadUInt32LittleEndian(_w1cmask.AsSpan((int)offset, 4));
            value &= 0xFFFF_FFFF;
            Set32(offset, (uint)(((old & ~wm) | (value & wm)) & ~(w1c & value)));
        }
        else
        {
            old = Get64(offset);
            wm = BinaryPrimitives.ReadUInt64LittleEndian(_wmask.AsSpan((int)offset, 8));
            w1c = BinaryPrimitives.ReadUInt64LittleEndian(_w1cmask.AsSpan((int)offset, 8));
            Set64(offset, ((old & ~wm) | (value & wm)) & ~(w1c & value));
        }

        // Side effects, dword by dword, in address order.
        for (uint d = offset; d < offset + (uint)size; d += 4)
        {
            OnDwordWritten(d);
        }
    }

    private void OnDwordWritten(uint dword)
    {
        switch (dword)
        {
            case VtdRegister.Gcmd:
                OnGlobalCommand(Get32(VtdRegister.Gcmd));
                return;
            case VtdRegister.Ccmd + 4:
                OnContextCommand();
                return;
            case VtdRegister.Fsts:
                UpdateFaultInterruptPending();

                // Fetching stops only while IQE is set: once software clears it the unit goes on from IQH
                // without a tail write (Linux rewrites the bad slot, clears IQE and writes no tail).
                ProcessInvalidationQueue(tailWritten: false);
                return;
            case VtdRegister.Fectl:
                OnFaultEventControl();
                return;
            case VtdRegister.Iqt:
                ProcessInvalidationQueue();
                return;
            case VtdRegister.Ics:
                if ((Get32(VtdRegister.Ics) & VtdRegister.IcsIwc) == 0)
                {
                    Set32(VtdRegister.Iectl, Get32(VtdRegister.Iectl) & ~VtdRegister.EventControlIp);
                }

                return;
            case VtdRegister.Iectl:
                OnInvalidationEventControl();
                return;
            case VtdRegister.Prs when _config.PageRequests:
                OnPageRequestStatusWritten();
                return;
            case VtdRegister.Pectl when _config.PageRequests:
                OnPageRequestEventControl();
                return;
        }

        if (dword == _iotlbRegs + VtdRegister.IotlbInPair + 4)
        {
            OnIotlbCommand();
        }
        else if (dword >= _faultRegs && dword < _faultRegs + ((uint)_config.FaultRecordCount * VtdRegister.FaultRecordSize)
            && ((dword - _faultRegs) & 0xF) == 0xC)
        {
            OnFaultRecordCleared();
        }
    }

    /// <remarks>
    /// Level bits (TE, QIE, and with ECAP.IR also IRE and CFI) act when they differ from GSTS; one-shot
    /// bits (SRTP, WBF, and with ECAP.IR SIRTP) act when written as 1 and complete at once, so RTPS and
    /// IRTPS read 1 afterwards and WBFS reads 0. The interrupt-remapping table itself is not modelled:
    /// SIRTP only reports the pointer latched (the Global Command and Global Status registers; a driver polls IRTPS and IRES and
    /// panics when they never set). SFL and EAFL belong to advanced fault logging, which this unit does
    /// not report, and are ignored; so are IRE, SIRTP and CFI without ECAP.IR.
    /// QEMU 7.2 also flushes the IOTLB and context cache on every TE change and on SRTP; the
    /// specification does that on SRTP only with CAP.ESRTPS, which is what this model does.
    /// </remarks>
    private void OnGlobalCommand(uint command)
    {
        uint status = Get32(VtdRegister.Gsts);
        if (((command ^ status) & VtdRegister.GcmdTe) != 0)
        {
            status ^= VtdRegister.GcmdTe;
        }

        // The latched root table and the enable change in one write (see _rootTable).
        bool srtp = (command & VtdRegister.GcmdSrtp) != 0;
        bool enabled = (status & VtdRegister.GcmdTe) != 0;
        bool changed = enabled != TranslationEnabled || srtp;
        // RTA bits at or above HAW are kept (see VtdConfig.HostAddressWidth): the root table read faults there.
        ulong root = srtp ? Get64(VtdRegister.Rtaddr) & (VtdFormat.PointerMask | 0xC00) : LatchedRootTable;
        Volatile.Write(ref _rootTable, root | (enabled ? TranslationEnabledBit : 0));
        if (srtp)
        {
            status |= VtdRegister.GcmdSrtp;
            if (_config.SetRootTableInvalidatesCaches)
            {
                InvalidateAllCaches();
            }
        }

        if (changed)
        {
            // What the caches answer depends on both; counted after the change (TranslationShortcut), and before
            // GSTS shows it: a vCPU that reads TES = 0 must find no memoised translation (an interlocked increment,
            // so the status store below cannot pass it).
            _shortcut.RetireAll();
        }

        Set32(VtdRegister.Gsts, status);
        InvalidationObserver?.OnGlobalCommand(command, root, enabled);

        if (_config.InterruptRemapping)
        {
            // SIRTP latches IRTA (nothing reads it: no table is modelled) and completes at once; IRE and
            // CFI are level bits whose status follows the command.
            uint ir = VtdRegister.GcmdIre | VtdRegister.GcmdCfi;
            status = (status & ~ir) | (command & ir);
            if ((command & VtdRegister.GcmdSirtp) != 0)
            {
                status |= VtdRegister.GcmdSirtp;
            }

            Set32(VtdRegister.Gsts, status);
        }

        // With both remapping functions off the fault-record index returns to the first record, so the next
        // fault software sees after re-enabling lands in record 0 (QEMU clears it when TE is cleared).
        if ((status & (VtdRegister.GcmdTe | VtdRegister.GcmdIre)) == 0)
        {
            _nextFaultRecord = 0;
        }

        if (_config.QueuedInvalidation && ((command ^ status) & VtdRegister.GcmdQie) != 0)
        {
            // Enabling or disabling resets the head; software has written IQT = 0 before enabling.
            Set64(VtdRegister.Iqh, 0);
            Set32(VtdRegister.Gsts, status ^ VtdRegister.GcmdQie);
            if ((command & VtdRegister.GcmdQie) != 0)
            {
                ProcessInvalidationQueue();
            }
        }
    }

    private bool QueuedInvalidationEnabled
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (Get32(VtdRegister.Gsts) & VtdRegister.GcmdQie) != 0;
    }
}
