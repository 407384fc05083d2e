namespace Iommu.Devices;

/// <summary>
/// Attributes of a request with PASID beyond its direction: the PASID TLP prefix's privileged-mode
/// (PMR) and execute-requested (ER) bits.
/// </summary>
/// <remarks>
/// Both travel in the PASID prefix, so a request without PASID carries neither: a remapper treats it as
/// a user, non-execute request whatever is passed. Execute applies to reads only (ER is defined for
/// memory reads); on a write it is dropped. What they change is the remapper's: on VT-d, SRE (fault
/// 0x5D) and ERE (0x5C) in the PASID entry, and in a first-level walk the U/S check (supervisor requests
/// skip it), the R/W check (supervisor writes honour it only with WPE), XD with NXE and SMEP (0x82).
/// A remapper that does not model them (one without <see cref="IDmaRemapperAttributes"/>) treats every
/// request as a user, non-execute one.
/// </remarks>
[Flags]
public enum DmaRequestAttributes
{
    /// <summary>A user, non-execute request (every request of the entry points without attributes).</summary>
    None = 0,

    /// <summary>PMR: the request asks for supervisor privilege.</summary>
    Privileged = 1,

    /// <summary>ER: an instruction fetch (a read that needs execute permission).</summary>
    Execute = 2,
}
