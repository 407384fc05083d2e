namespace Iommu.Integration.Tests;

[Collection(ConsoleSamples.Name)]
public sealed class CoreTourTests
{
    [Fact]
    public void The_core_tour_runs_and_every_step_behaves()
    {
        var output = new StringWriter();
        TextWriter original = Console.Out;
        int exit;
        try
        {
            Console.SetOut(output);
            exit = RunTour();
        }
        finally
        {
            Console.SetOut(original);
        }

        string text = output.ToString();
        Assert.True(exit == 0, text);
        Assert.DoesNotContain("UNEXPECTED", text, StringComparison.Ordinal);
        Assert.Contains("map_pages(iova=0x1000, pgsize=4K, count=511)", text, StringComparison.Ordinal);
        Assert.Contains("aux domain 2: PASID 3", text, StringComparison.Ordinal);
    }

    private static int RunTour()
    {
        System.Reflection.MethodInfo main = System.Reflection.Assembly.Load("CoreTour").EntryPoint!;
        return (int)main.Invoke(null, [Array.Empty<string>()])!;
    }
}
