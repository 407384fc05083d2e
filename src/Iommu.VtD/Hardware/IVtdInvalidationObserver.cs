namespace Iommu.VtD.Hardware;

/// <summary>
/// What an emulator that shadows the guest's tables (a virtual IOMMU with caching mode) learns from the
/// unit: every invalidation it executes and every global command, as raw register or descriptor values.
/// </summary>
/// <remarks>
/// Internal and for tests only: such an emulator builds its shadow of the guest's mappings from these
/// events alone, so a test can tell a missing or malformed invalidation from a correct one. Calls come on
/// the thread that wrote the register, with the unit's lock held and after the unit has acted on them:
/// an observer may read physical memory but must not call back into the unit.
/// </remarks>
internal interface IVtdInvalidationObserver
{
    /// <summary>A queued descriptor the unit executed without error (its first two quadwords).</summary>
    /// <param name="q0">Low quadword.</param>
    /// <param name="q1">Second quadword.</param>
    void OnDescriptor(ulong q0, ulong q1);

    /// <summary>A register-based context-cache invalidation (CCMD with ICC) the unit performed.</summary>
    /// <param name="ccmd">The CCMD value written.</param>
    void OnContextCommand(ulong ccmd);

    /// <summary>A register-based IOTLB invalidation the unit performed.</summary>
    /// <param name="iotlb">The IOTLB register value written.</param>
    /// <param name="iva">The IVA register value.</param>
    void OnIotlbCommand(ulong iotlb, ulong iva);

    /// <summary>A GCMD write.</summary>
    /// <param name="command">The value written.</param>
    /// <param name="rootTable">The root table pointer latched (with its TTM bits).</param>
    /// <param name="translationEnabled">GSTS.TE after the write.</param>
    void OnGlobalCommand(uint command, ulong rootTable, bool translationEnabled);
}
