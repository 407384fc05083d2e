namespace Iommu.Mm;

/// <summary>Protection of a virtual memory area (<c>PROT_*</c>).</summary>
[Flags]
public enum VmProt
{
    /// <summary><c>PROT_NONE</c>.</summary>
    None = 0,

    /// <summary><c>PROT_READ</c>.</summary>
    Read = 1,

    /// <summary><c>PROT_WRITE</c> (implies read on x86).</summary>
    Write = 2,

    /// <summary>Read and write.</summary>
    ReadWrite = Read | Write,

    /// <summary><c>PROT_EXEC</c>: the page-table leaves lose XD (implies read on x86).</summary>
    Exec = 4,
}
