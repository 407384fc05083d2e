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
            return new VtdUnitState((byte[])_regs.Clone(), _config.Cap, _config.Ecap, Volatile.Read(ref _rootTable), _nextFaultRecord);
        }
    }

    /// <summary>
    /// Replaces the guest-visible state with <paramref name="state"/> (saved from this unit or another
    /// with the same capabilities); the caches start empty (see <see cref="VtdUnitState"/>'s remarks).
    /// Nothing is replayed: no command runs, no queue is processed and no interrupt is sent.
    /// </summary>
    /// <param name="state">A state from <see cref="SaveState"/> or <see cref="VtdUnitState.FromBytes"/>.</param>
    /// <exception cref="ArgumentException">The state is of a unit with other capabilities or another register block.</exception>
    public void RestoreState(VtdUnitState state)
    {
        using PhysicalMemory.AccessScope guard = _memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(state);
        if (state.Cap != _config.Cap || state.Ecap != _config.Ecap || state.Registers.Length != _regs.Length
            || state.NextFaultRecord >= _config.FaultRecordCount)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"The state is of a unit with CAP 0x{state.Cap:X}, ECAP 0x{state.Ecap:X} and a {state.Registers.Length}-byte register block; this unit has CAP 0x{_config.Cap:X}, ECAP 0x{_config.Ecap:X} and {_regs.Length} bytes."),
                nameof(state));
        }

        using (_lock.EnterScope())
        {
            Load(state.Registers.ToArray(), state.LatchedRootTable, state.NextFaultRecord);
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
        _faultMsiPending = _invMsiPending = false;
        _interruptPending = false;
        Volatile.Write(ref _rootTable, latchedRootTable);
        _translationEnabled = (Get32(VtdRegister.Gsts) & VtdRegister.GcmdTe) != 0;
        InvalidateAllCaches(); // retires the shortcut's memos too (TranslationCache.InvalidateAll)
    }
}
