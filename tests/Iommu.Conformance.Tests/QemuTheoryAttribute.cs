using System.Diagnostics;
using Xunit.Abstractions;

namespace Iommu.Conformance.Tests;

/// <summary>As <see cref="QemuFactAttribute"/>, for a theory.</summary>
public sealed class QemuTheoryAttribute : TheoryAttribute
{
    public QemuTheoryAttribute()
    {
        Skip = new QemuFactAttribute().Skip;
    }
}
