using System.Buffers.Binary;
using System.Globalization;
using Iommu.Memory;

namespace Iommu.VtD.Hardware;

/// <content>Reset to power-on values, and save/restore of the guest-visible state (an emulator's reboot and snapshots).</content>
public sealed partial class VtdUnit
{
    /// <summary>
    /// Puts the unit back to its power-on state, as a platform reset does: every register to its reset
    /// value (translation and queued invalidation disabled, no root table, fault records and status
    /// clear, interrupts masked), every cache empty. Events stay subscribed; statistics and counters are
    /// the model's and are kept.
    /// </summary>
    public void Reset()
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        using (_lock.EnterScope())
        {
            Load(registers: null, latchedRootTable: 0, nextFaultRecord: 0);
        }
    }

    /// <summary>The guest-visible state now (see <see cref="VtdUnitState"/>); take it between guest accesses.</summary>
    /// <returns>A copy that later accesses do not change.</returns>
    public VtdUnitState SaveState()
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        using (_lock.EnterScope())
        {
            return new VtdUnitState((byte[])_regs.Clone(), _config.Cap, _config.Ecap, LatchedRootTable, _nextFaultRecord, VtdUnitState.ShapeOf(_config));
        }
    }

    /// <summary>
    /// Replaces the guest-visible state with <paramref name="state"/> (saved from this unit or another
    /// with the same capabilities); the caches start empty (see <see cref="VtdUnitState"/>'s remarks).
    /// Nothing is replayed: no command runs, no queue is processed and no interrupt is sent.
    /// </summary>
    /// <param name="state">A state from <see cref="SaveState"/> or <see cref="VtdUnitState.FromBytes"/>.</param>
    /// <exception cref="ArgumentException">
    /// The state is of a unit with another configuration: other CAP, ECAP or VER, another register block, or
    /// another host address width, cache shape or model profile (the message names each difference). The unit
    /// is left as it was.
    /// </exception>
    public void RestoreState(VtdUnitState state)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(state);
        string? differences = Differences(state);
        if (differences is not null)
        {
            throw new ArgumentException($"The state is of a unit with another configuration: {differences}.", nameof(state));
        }

        using (_lock.EnterScope())
        {
            Load(state.Registers.ToArray(), state.LatchedRootTable, state.NextFaultRecord);
        }
    }

    // What keeps the state from being this unit's, or null. VER is compared in the register block: it is the
    // value the guest reads, and a version 1 state records nothing else of the configuration.
    private string? Differences(VtdUnitState state)
    {
        var found = new List<string>();
        Add("CAP", state.Cap, _config.Cap);
        Add("ECAP", state.Ecap, _config.Ecap);
        if (state.Registers.Length != _regs.Length)
        {
            found.Add(string.Create(CultureInfo.InvariantCulture, $"a {state.Registers.Length}-byte register block, this unit {_regs.Length} bytes"));
        }
        else
        {
            Add("VER", BinaryPrimitives.ReadUInt32LittleEndian(state.Registers[(int)VtdRegister.Ver..]), _config.Version);
        }

        if (state.NextFaultRecord >= _config.FaultRecordCount)
        {
            found.Add(string.Create(CultureInfo.InvariantCulture, $"next fault record index {state.NextFaultRecord}, this unit has {_config.FaultRecordCount} fault record{(_config.FaultRecordCount == 1 ? "" : "s")}"));
        }

        if (state.Shape is long[] shape)
        {
            long[] mine = VtdUnitState.ShapeOf(_config);
            for (int i = 0; i < mine.Length; i++)
            {
                if (shape[i] != mine[i])
                {
                    found.Add(string.Create(CultureInfo.InvariantCulture, $"{VtdUnitState.ShapeNames[i]} {shape[i]}, this unit {mine[i]}"));
                }
            }
        }

        return found.Count == 0 ? null : string.Join("; ", found);

        void Add(string name, ulong saved, ulong own)
        {
            if (saved != own)
            {
                found.Add(string.Create(CultureInfo.InvariantCulture, $"{name} 0x{saved:X}, this unit 0x{own:X}"));
            }
        }
    }

    // Under the lock: registers from a copy (or reset values), then the state derived from them, then
    // empty caches (after the state they were filled under is gone, so nothing refills from it).
    private void Load(byte[]? registers, ulong latchedRootTable, int nextFaultRecord)
    {
        InitRegisters();
        if (registers is not null)
        {
            registers.CopyTo(_regs, 0);
        }

        _nextFaultRecord = nextFaultRecord;
        _faultMsiPending = _invMsiPending = _prMsiPending = false;
        _interruptPending = false;
        bool enabled = (Get32(VtdRegister.Gsts) & VtdRegister.GcmdTe) != 0;
        Volatile.Write(ref _rootTable, (latchedRootTable & ~TranslationEnabledBit) | (enabled ? TranslationEnabledBit : 0));
        InvalidateAllCaches(); // retires the shortcut's memos too (TranslationCache.InvalidateAll)
    }
}
