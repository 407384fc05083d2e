namespace Iommu.VtD.Hardware;

/// <summary>
/// Attributes of a request with PASID beyond its direction: the PASID TLP prefix's privileged-mode
/// (PMR) and execute-requested (ER) bits.
/// </summary>
/// <remarks>
/// Both travel in the PASID prefix, so a request without PASID carries neither: the unit treats it as a
/// user, non-execute request whatever is passed. Execute applies to reads only (ER is defined for
/// memory reads); on a write it is dropped. What the attributes change: SRE (0x5D) and ERE (0x5C) in
/// the PASID entry, and in a first-level walk the U/S check (supervisor requests skip it), the R/W
/// check (supervisor writes need R/W only with WPE), XD with NXE and SMEP (0x82). Fault records of
/// requests with PASID carry them in FRCD.PRIV and FRCD.EXE.
/// </remarks>
[Flags]
public enum DmaRequestAttributes
{
    /// <summary>A user, non-execute request (every request of the <c>DmaAccess</c>-only entry points).</summary>
    None = 0,

    /// <summary>PMR: the request asks for supervisor privilege.</summary>
    Privileged = 1,

    /// <summary>ER: an instruction fetch (a read that needs execute permission).</summary>
    Execute = 2,
}
