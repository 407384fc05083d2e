namespace Iommu.Mm;

/// <summary>
/// What a CPU walk of one user address through a process's IA-32e tables reads: the PML4, PDPT, PD
/// and PT entries (0 from the first missing level on), and what they grant together.
/// </summary>
/// <remarks>
/// Bits as Linux writes them for user pages: P, R/W (per VMA and copy-on-write state), U/S on every
/// level, A and D as the CPU sets them on touch, XD on leaves of non-executable areas. A
/// <c>PROT_NONE</c> page has P = 0 (Linux's protnone encoding keeps its frame in the leaf).
/// </remarks>
/// <param name="Address">The address walked.</param>
/// <param name="Pml4e">Level-4 entry.</param>
/// <param name="Pdpte">Level-3 entry.</param>
/// <param name="Pde">Level-2 entry.</param>
/// <param name="Pte">The leaf.</param>
public readonly record struct X86PageWalk(ulong Address, ulong Pml4e, ulong Pdpte, ulong Pde, ulong Pte)
{
    /// <summary>P at every level: the CPU (or a first-level IOMMU walk) translates the address.</summary>
    public bool Present => (Pml4e & Pdpte & Pde & Pte & X86PageTable.Present) != 0;

    /// <summary>Present and R/W at every level: a user write is allowed.</summary>
    public bool Writable => Present && (Pml4e & Pdpte & Pde & Pte & X86PageTable.Writable) != 0;

    /// <summary>Present and U/S at every level: a user access is allowed.</summary>
    public bool User => Present && (Pml4e & Pdpte & Pde & Pte & X86PageTable.User) != 0;

    /// <summary>The leaf's A bit.</summary>
    public bool Accessed => (Pte & X86PageTable.Accessed) != 0;

    /// <summary>The leaf's D bit.</summary>
    public bool Dirty => (Pte & X86PageTable.Dirty) != 0;

    /// <summary>The leaf's XD bit.</summary>
    public bool ExecuteDisable => (Pte & X86PageTable.ExecuteDisable) != 0;

    /// <summary>The frame the leaf names (also for a <c>PROT_NONE</c> leaf); 0 without a leaf.</summary>
    public ulong Pfn => (Pte & X86PageTable.AddressMask) >> 12;

    /// <summary>The physical address <see cref="Address"/> reaches when <see cref="Present"/>.</summary>
    public ulong PhysicalAddress => (Pte & X86PageTable.AddressMask) | (Address & 0xFFF);
}
