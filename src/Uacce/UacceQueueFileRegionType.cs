using Iommu;

namespace Uacce;

/// <summary>Region types a queue maps; the value is the mmap page offset (<c>enum uacce_qfrt</c>).</summary>
[KernelSymbol("enum uacce_qfrt")]
public enum UacceQueueFileRegionType
{
    /// <summary>Device MMIO of the queue, e.g. its doorbell (<c>UACCE_QFRT_MMIO</c>, pgoff 0).</summary>
    Mmio = 0,

    /// <summary>Device-user-shared memory, e.g. the descriptor ring (<c>UACCE_QFRT_DUS</c>, pgoff 1).</summary>
    Dus = 1,
}
